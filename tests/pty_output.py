"""Reading what a child process wrote to a pseudo-terminal, for the CLI's terminal tests."""

from __future__ import annotations

import os


def read_until_closed(controller: int) -> bytes:
    """Everything left on the pty's controller side until the child closes its end."""
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed its end
            return seen
        if not chunk:
            return seen
        seen += chunk
