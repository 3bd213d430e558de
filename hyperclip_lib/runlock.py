"""One batch per run folder, and no notebook outliving its batch.

`RunFolder` holds an exclusive `flock` on `<run>/run.lock` for the batch's lifetime; the kernel drops it when
the process dies, even by `kill -9`. The lock file lists the process groups of the notebooks running (each
papermill job is started in a session of its own, so its kernel belongs to its group). A second invocation
that cannot take the lock refuses, naming the live batch; one that can, but finds groups listed, knows the
last batch died without cleaning up: it stops those groups and removes their half-written notebooks first.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path


class RunFolderBusy(RuntimeError):
    pass


def stop_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM a process group, then SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class RunFolder:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / "run.lock"
        self.groups: set[int] = set()
        self.handle = None

    def __enter__(self) -> "RunFolder":
        self.out.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip()
            self.handle.close()
            raise RunFolderBusy(f"{self.out} is in use by another `hyperclip run-notebooks` ({holder or 'pid unknown'}); "
                                "wait for it to finish or stop it, or choose another --out") from None
        self.handle.seek(0)
        try:
            stale = json.loads(self.handle.read() or "{}").get("groups", [])
        except json.JSONDecodeError:
            stale = []
        for pgid in stale:   # a batch died (kill -9) and left its notebooks running
            stop_group(pgid)
        for partial in (self.out / "notebooks").glob(".*.running"):
            partial.unlink()
        self._write()
        return self

    def _write(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps({"pid": os.getpid(), "groups": sorted(self.groups)}))
        self.handle.flush()

    def started(self, pgid: int) -> None:
        self.groups.add(pgid)
        self._write()

    def finished(self, pgid: int) -> None:
        self.groups.discard(pgid)
        self._write()

    def stop_all(self) -> None:
        for pgid in list(self.groups):
            stop_group(pgid)
            self.finished(pgid)

    def __exit__(self, *exc) -> None:
        self.stop_all()
        self.handle.seek(0)
        self.handle.truncate()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
