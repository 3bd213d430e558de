"""What every stage shares: versioned cache keys, a timer, and the sweep over seeds and descriptor shares."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from .. import numerics
from ..config import Config, run_configs
from ..records import save_record

# Bump a stage's number when a change of its code changes what it computes or how it stores it: its cache
# key, and every key that nests it, then changes, so the stale artifact is rebuilt rather than reused.
STAGE_VERSIONS = {"world": 2, "metavqa": 1, "world_clip": 2, "features": 1, "baseline": 1, "finetuned": 1,
                  "hvae": 3, "hyperclip": 3, "hyperldm": 3, "hyperldm_samples": 1}


# Stages of plain Python and integer arithmetic (scenes, the A.4 rules): their output does not depend on threads
# or CPU code paths, so their keys leave the numeric settings out.
EXACT_STAGES = ("world", "metavqa")


def stage_key(stage: str, **parts) -> dict:
    """A stage's cache key: its code version, the numeric settings it is computed under (numerics.py) and
    what it depends on."""
    key = {"stage": stage, "version": STAGE_VERSIONS[stage]}
    if stage not in EXACT_STAGES:
        key["numerics"] = numerics.identity()
    return {**key, **parts}


@contextmanager
def timed(timings: dict, name: str):
    """Adds the seconds spent in the block to `timings[name]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def sweep(cfg: Config, names: Iterable[str], seeds, descriptor_fractions, run_one: Callable,
          results_dir: str | Path | None = None, shares_of: Callable[[str], Iterable[float]] | None = None) -> list:
    """`run_one(run_cfg, name)` for every name × seed × descriptor share (`shares_of(name)` narrows the
    shares, e.g. to 100% for methods that never read descriptors); each result's records also go to
    `results_dir` when given."""
    results = []
    for name in names:
        shares = shares_of(name) if shares_of is not None else descriptor_fractions
        for run_cfg in run_configs(cfg, seeds, shares):
            result = run_one(run_cfg, name)
            if results_dir is not None:
                for record in result.records:
                    save_record(record, results_dir)
            results.append(result)
    return results
