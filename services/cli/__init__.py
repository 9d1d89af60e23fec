"""The `chatbus` command: the composition root, the one package that wires several services together.

`app.py` holds the command tree; each other module one group of commands (or what they share).
`processes.py` starts and stops child processes for `chatbus up`, the tests and the benchmarks.
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the `chatbus` script."""
    from services.cli.app import app

    app()
