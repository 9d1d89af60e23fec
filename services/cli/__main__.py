"""`python -m services.cli`: how `chatbus up` starts its services."""

from services.cli import main

main()
