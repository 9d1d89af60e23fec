"""`chatbus batch ...`: submit a file of prompts as a batch, follow it with a progress bar, fetch its
answers; status, cancel, results and list. Talks to the API over HTTP with an API key (docs/batches.md)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.batch_lines import looks_like_jsonl
from services.cli.settings import DEFAULT_API_URL, variable_of

ENDED = frozenset({"completed", "cancelled", "expired", "failed"})
POLL_SECONDS = 1.0
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})  # answers a poll retries (the API or NATS restarting)
RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # backoff between retries; the last repeats
GIVE_UP_SECONDS = 600.0  # a poll failing this long in a row stops the wait

batch_app = typer.Typer(
    help="Submit batches of prompts (JSONL or one prompt a line) and fetch their answers (docs/batches.md).",
    no_args_is_help=True,
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Url = Annotated[str, typer.Option("--url", envvar=variable_of("api_url"), help="The chatbus API's address.")]
Key = Annotated[
    str,
    typer.Option(
        "--key",
        envvar=variable_of("api_key"),
        help="Your API key (`chatbus admin key issue NAME` prints one).",
        show_default=False,
    ),
]
BatchId = Annotated[str, typer.Argument(help="The batch's id (`chatbus batch list` shows them).")]


class Transient(Exception):
    """An answer worth retrying: the API or the bus is away for a moment."""


class BatchClient:
    """One user's HTTP calls to the batch routes; a refusal is printed with what to do and exits 1."""

    def __init__(self, url: str, key: str) -> None:
        if not key:
            err.print(f"[red]No API key: give --key or set {variable_of('api_key')}.[/]")
            raise typer.Exit(2)
        self.base, self.key = url.rstrip("/"), key

    def raw(
        self, method: str, path: str, data: bytes | None = None, content_type: str = "", retry: bool = False
    ) -> bytes:
        """The body of a 2xx answer; with `retry`, a transient failure raises Transient instead of exiting."""
        headers = {"Authorization": f"Bearer {self.key}"}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - the user's own API
                return bytes(answer.read())
        except urllib.error.HTTPError as exc:
            if retry and exc.code in TRANSIENT:
                raise Transient(f"{exc.code} {_message(exc.read())}") from None
            err.print(f"[red]{method} {path}: {exc.code} {_message(exc.read())}[/]")
            if exc.code == 401:
                err.print("Check the API key (--key or CHATBUS_API_KEY).")
            raise typer.Exit(1) from None
        except urllib.error.URLError as exc:
            if retry:
                raise Transient(f"cannot reach the API at {self.base}: {exc.reason}") from None
            err.print(f"[red]Cannot reach the API at {self.base}: {exc.reason}.[/] Is it running? (--url)")
            raise typer.Exit(1) from None
        except (OSError, http.client.HTTPException) as exc:  # a connection cut mid-answer
            if retry:
                raise Transient(f"the connection to {self.base} broke: {exc!r}") from None
            err.print(f"[red]{method} {path}: the connection broke ({exc!r}).[/] Try again.")
            raise typer.Exit(1) from None

    def json(self, method: str, path: str, data: bytes | None = None, content_type: str = "") -> Any:
        """A JSON answer."""
        return json.loads(self.raw(method, path, data, content_type))

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The Batch object now."""
        return self.json("GET", f"/v1/batches/{quote(batch_id, safe='')}")  # type: ignore[no-any-return]

    def patient(self, method: str, path: str) -> bytes:
        """A 2xx answer's body, retrying transient failures (a 5xx, 408, 429, a network error) with
        backoff, saying so; past GIVE_UP_SECONDS of failures in a row, it exits 1."""
        failing_since, attempt = 0.0, 0
        while True:
            try:
                return self.raw(method, path, retry=True)
            except Transient as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > GIVE_UP_SECONDS:
                    err.print(f"[red]{method} {path}: {exc}; gave up after {GIVE_UP_SECONDS:g} s.[/]")
                    err.print("The batch goes on: `chatbus batch status ID`, `chatbus batch results ID`.")
                    raise typer.Exit(1) from None
                pause = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                err.print(f"[yellow]{method} {path}: {exc}; retrying in {pause:g} s[/]")
                time.sleep(pause)
                attempt += 1


def _message(body: bytes) -> str:
    """What an error answer says, with the lines it names."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]
    if not isinstance(error, dict):
        return str(error)
    lines = "".join(
        f"\n  line {line['line']}"
        + (f" ({line['custom_id']})" if line.get("custom_id") else "")
        + (f" {line['param']}" if line.get("param") else "")
        + f": {line['message']}"
        for line in error.get("lines") or []
    )
    return f"{error.get('message', '')}{lines}"


def _summary(batch: dict[str, Any]) -> str:
    counts = batch["request_counts"]
    return (
        f"{batch['id']}: {batch['status']}, {counts['completed']} answered, {counts['failed']} without an"
        f" answer, of {counts['total']}"
    )


def _wait(client: BatchClient, batch: dict[str, Any]) -> dict[str, Any]:
    """Poll the batch until it ends, with a progress bar of the lines ended (answered or not)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(batch["id"], total=batch["request_counts"]["total"])
        while batch["status"] not in ENDED:
            time.sleep(POLL_SECONDS)
            batch = json.loads(client.patient("GET", f"/v1/batches/{quote(batch['id'], safe='')}"))
            counts = batch["request_counts"]
            progress.update(
                task, completed=counts["completed"] + counts["failed"], description=batch["status"]
            )
    return batch


def _write_results(client: BatchClient, batch_id: str, out: Path | None, errors: Path | None) -> None:
    for path, kind in ((out, "output"), (errors, "errors")):
        if path is not None:
            data = client.patient("GET", f"/v1/batches/{quote(batch_id, safe='')}/{kind}")
            path.write_bytes(data)
            console.print(f"{kind}: {len(data.splitlines())} lines written to {path}")


@batch_app.command("submit")
def submit(
    file: Annotated[
        Path, typer.Argument(help="JSONL (OpenAI batch lines) or plain text (one prompt a line).")
    ],
    model: Annotated[str, typer.Option("--model", help="The model of lines that name none.")] = "",
    window: Annotated[
        str, typer.Option("--window", help="Completion window: `24h`, `<n>h` or `<n>m`.")
    ] = "24h",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the answers here (JSONL); implies --wait.")
    ] = None,
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Write the lines without an answer here (JSONL).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the batch with a progress bar until it ends.")
    ] = False,
    url: Url = DEFAULT_API_URL,
    key: Key = "",
) -> None:
    """Submit FILE as a batch (JSONL or plain text, told apart by its first line); print the batch id.

    With --wait (or --out), follow it to its end and write the answers (--out) and the failures (--errors).
    """
    client = BatchClient(url, key)
    try:
        data = file.read_bytes()
    except OSError as exc:
        err.print(f"[red]Cannot read {file}: {exc.strerror}.[/]")
        raise typer.Exit(2) from None
    kind = "application/jsonl" if looks_like_jsonl(data) else "text/plain"
    query = urlencode({k: v for k, v in (("model", model), ("completion_window", window)) if v})
    batch = client.json("POST", f"/v1/batches?{query}", data, kind)
    console.print(_summary(batch))
    if not (wait or out is not None or errors is not None):
        console.print(f"Follow it with `chatbus batch status {batch['id']}`.")
        return
    batch = _wait(client, batch)
    console.print(_summary(batch))
    _write_results(client, batch["id"], out, errors)


@batch_app.command("status")
def status(batch_id: BatchId, url: Url = DEFAULT_API_URL, key: Key = "") -> None:
    """Show a batch's status and counts (the Batch object as JSON)."""
    console.print_json(json.dumps(BatchClient(url, key).batch(batch_id)))


@batch_app.command("cancel")
def cancel(batch_id: BatchId, url: Url = DEFAULT_API_URL, key: Key = "") -> None:
    """Cancel a batch: lines not yet ended are cancelled (they appear in its errors file)."""
    batch = BatchClient(url, key).json("POST", f"/v1/batches/{quote(batch_id, safe='')}/cancel")
    console.print(_summary(batch))


@batch_app.command("results")
def results(
    batch_id: BatchId,
    out: Annotated[Path, typer.Option("--out", help="Write the answers here (JSONL, in input order).")],
    errors: Annotated[
        Path | None, typer.Option("--errors", help="Write the lines without an answer here (JSONL).")
    ] = None,
    url: Url = DEFAULT_API_URL,
    key: Key = "",
) -> None:
    """Write a batch's answers so far (and its failures) to files, without waiting."""
    _write_results(BatchClient(url, key), batch_id, out, errors)


@batch_app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="How many, newest first.")] = 20,
    url: Url = DEFAULT_API_URL,
    key: Key = "",
) -> None:
    """List your batches, newest first."""
    page = BatchClient(url, key).json("GET", f"/v1/batches?limit={limit}")
    table = Table("id", "status", "answered", "failed", "total", "model", "created")
    for batch in page["data"]:
        counts = batch["request_counts"]
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(batch["created_at"]))
        table.add_row(
            batch["id"],
            batch["status"],
            str(counts["completed"]),
            str(counts["failed"]),
            str(counts["total"]),
            batch.get("model", ""),
            created,
        )
    console.print(table)
