"""The `chatbus` command: the composition root, the one package that wires several services together.

`app.py` holds the command tree; each other module one group of commands (or what they share).
`processes.py` starts and stops child processes for `chatbus up`, the tests and the benchmarks.
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the `chatbus` script; a bad setting ends it with the message, not a traceback."""
    from rich.markup import escape

    from schemas.settings_env import SettingsError
    from services.cli.app import app
    from services.cli.output import console

    try:
        app()
    except SettingsError as exc:
        console.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        raise SystemExit(2) from None
