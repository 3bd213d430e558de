"""`python -m hyperclip_lib.papermill_cli ARGS`: papermill's command line, its kernel client polling in 1-s slices.

Why: run many times with widgets on (`scripts/stress_widgets.sh`), papermill sometimes leaves a cell's reply
unread in its own socket. Measured on notebook 05 (ipykernel 6.31): the kernel sent the γ explorer cell's
execute_reply at 22:01:01, 12 s into the cell, and went idle; papermill read it at 22:05:49, exactly when the
300-s cell timeout ended its one long `poll` — the reply had been there all along, but the event loop was never
woken for it. Without a cell timeout the notebook waits forever (the "widget hang" of earlier runs; also seen
with ipykernel 7.4). Polling in short slices bounds such a missed wake-up to one slice; the overall timeout
is unchanged.
"""
from __future__ import annotations

import atexit
import resource
import sys
import time
from queue import Empty

from jupyter_client.channels import AsyncZMQSocketChannel

POLL_SLICE_S = 1.0


async def _get_msg_in_slices(self, timeout: float | None = None) -> dict:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = POLL_SLICE_S if deadline is None else min(POLL_SLICE_S, max(0.0, deadline - time.monotonic()))
        if await self.socket.poll(int(left * 1000)):
            return await self._recv()
        if deadline is not None and time.monotonic() >= deadline:
            raise Empty


AsyncZMQSocketChannel.get_msg = _get_msg_in_slices
PEAK_MEMORY = "[peak-memory] kernel"


def _report_peak_memory() -> None:
    """The notebook's peak resident memory: its kernel is this process's child, reaped once it shut down."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # KiB on Linux, bytes on macOS
    print(f"{PEAK_MEMORY} {peak / (2 ** 20 if sys.platform == 'darwin' else 1024):.0f} MiB", flush=True)


if __name__ == "__main__":
    atexit.register(_report_peak_memory)
    from papermill.cli import papermill
    papermill(prog_name="papermill")
