"""The artifact store: every stage's output lives in a folder named by a hash of its config.

A stage is built into a temporary folder beside its final place and renamed into place only
when complete, with a manifest holding the config and a SHA-256 of every file. On reuse the
manifest is checked; a missing, corrupted or mismatched artifact is rebuilt with a warning,
never silently used. Building holds an exclusive file lock per artifact (under `.locks/`), so processes running
seeds in parallel build a shared stage once and the others wait for it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

MANIFEST = "manifest.json"


def default_root() -> Path:
    """$HYPERCLIP_HOME, else `artifacts/` at the repository root."""
    env = os.environ.get("HYPERCLIP_HOME")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "artifacts"


def config_hash(config: Any) -> str:
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()   # what open() would give a new file; mkstemp's own is 0600


def atomic_write_bytes(path: os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: os.PathLike, obj: Any, **dump_kw: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, **dump_kw).encode())


class ArtifactError(RuntimeError):
    pass


class ArtifactStore:
    def __init__(self, root: os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, stage: str, config: Any) -> Path:
        return self.root / stage / config_hash(config)

    def verify(self, path: Path, config: Any) -> str | None:
        """None when the artifact at `path` is complete and built from `config`, else what is wrong."""
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            return f"{manifest_path} is missing"
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            return f"{manifest_path} is not valid JSON ({e})"
        if json.loads(json.dumps(config, default=str)) != manifest.get("config"):
            return f"{path} was built from a different config"
        for rel, meta in manifest.get("files", {}).items():
            f = path / rel
            if not f.exists():
                return f"{f} is missing"
            if f.stat().st_size != meta["size"] or file_sha256(f) != meta["sha256"]:
                return f"{f} does not match its checksum"
        return None

    def ensure(self, stage: str, config: Any, build: Callable[[Path], None]) -> Path:
        """The folder holding this stage's output for `config`, building it when absent or broken.

        `build(tmp_dir)` writes the stage's files into `tmp_dir`; it is renamed into place only
        after it returns, so an interrupted build leaves nothing that looks finished.
        """
        path = self.path(stage, config)
        if path.exists() and self.verify(path, config) is None:
            return path
        with self._lock(path):   # another process may have built it while we waited
            return self._build(stage, config, build, path)

    @contextlib.contextmanager
    def _lock(self, path: Path):
        lock = self.root / ".locks" / path.parent.name / f"{path.name}.lock"   # outside the stage's folder
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError as e:   # e.g. Lustre mounted without -o flock, NFS without a lock daemon
                raise OSError(e.errno, f"cannot lock {lock} ({e.strerror}): the artifact cache needs a filesystem "
                              "with working flock(2), shared by every node that builds artifacts; see "
                              "docs/cluster.md") from e
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _build(self, stage: str, config: Any, build: Callable[[Path], None], path: Path) -> Path:
        if path.exists():
            problem = self.verify(path, config)
            if problem is None:
                return path
            warnings.warn(f"artifact {stage}: {problem}; rebuilding it", stacklevel=3)
            shutil.rmtree(path)
        for stale in path.parent.glob(f".{path.name}.building.*"):   # a killed builder's; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building."))
        try:
            build(tmp)
            files = {str(f.relative_to(tmp)): {"size": f.stat().st_size, "sha256": file_sha256(f)}
                     for f in sorted(tmp.rglob("*")) if f.is_file()}
            manifest = {"stage": stage, "key": path.name, "config": config, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
