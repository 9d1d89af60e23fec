"""A terminal program in a pty for tests (pexpect), read from a thread so that the stack it talks to can run
on the test's own event loop; what it printed, without escape codes, is searched in order."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pexpect

from tests.stack import ROOT

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()>=][0-9A-Za-z]?")


class Terminal:
    """`chatbus chat ARGS` in a pty, read from a thread (the stack it talks to runs on this test's loop)."""

    def __init__(self, stack: dict[str, str], *args: str, key: str | None = None) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CHATBUS_URL": stack["base"],
            "CHATBUS_API_KEY": stack["ann"] if key is None else key,
            "TERM": "xterm",
            "NO_COLOR": "1",
            "PROMPT_TOOLKIT_NO_CPR": "1",  # the pty does not answer cursor position requests
        }
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "services.cli", "chat", *args],
            env=env,
            cwd=str(ROOT),
            encoding="utf-8",
            dimensions=(40, 160),
            timeout=60,
        )
        self.seen = ""
        self.mark = 0  # where in the text the next expect starts looking: after the last match

    async def expect(self, pattern: str, timeout: float = 60) -> str:
        """Wait until the screen output (escape codes removed) has `pattern` (a regex); what matched."""
        compiled = re.compile(pattern)
        deadline = asyncio.get_running_loop().time() + timeout
        while (match := compiled.search(self.text(), self.mark)) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.text()[-3000:]}")
            await asyncio.to_thread(self._read)
        self.mark = match.end()
        return match.group(0)

    def _read(self) -> None:
        try:
            self.seen += self.child.read_nonblocking(65536, timeout=0.2)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            if not self.child.isalive():
                raise AssertionError(f"the client ended:\n{self.text()[-3000:]}") from None

    def text(self) -> str:
        """The output without escape codes; a carriage return counts as a new line (a print above the
        prompt starts where the prompt was: back to its first column)."""
        return ANSI.sub("", self.seen).replace("\r", "\n")

    def type(self, line: str) -> None:
        self.child.sendline(line)

    async def leave(self) -> int:
        """Ctrl-D until the program ends (one typed while a line prints above the prompt, in the terminal's
        cooked mode, ends no prompt); its exit status."""
        for _ in range(20):
            self.child.sendeof()
            try:
                return await self.exit_code(timeout=1)
            except pexpect.TIMEOUT:
                continue
        return await self.exit_code()

    async def exit_code(self, timeout: float = 20) -> int:
        """Wait for the program to end; its exit status."""
        await asyncio.to_thread(self.child.expect, pexpect.EOF, timeout=timeout)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)
