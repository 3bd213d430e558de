"""Batch reproduction: every notebook, executed with papermill, into one run folder.

    run = plan_run("quick", out="runs/quick", seeds=[0, 1, 2], fractions=[1.0, 0.5], fig5b_fractions=[0.1])
    execute(run, jobs=1)

The run folder holds the executed notebooks (`notebooks/`), the result records they write
(`records/`), their figures (`figures/`), one log per job (`logs/`), `progress.json` and
`summary.md`. A job is skipped when `progress.json` says it finished with the same notebook
source and parameters and nothing before it ran again, so an interrupted run resumes where it
stopped; inside a notebook the artifact cache skips every stage already built. With `jobs > 1`
the per-seed notebooks run as separate processes, wave by wave (dataset; baselines and
generators; HyperCLIP and HyperLDM; analysis), sharing the cache through its per-artifact locks.
Every notebook computes with its config's `compute.threads`, however many run at once (numerics.py), so
`jobs` changes how long a run takes, never its records.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from . import numerics
from .analysis import results_tables
from .config import default_seeds, get_config
from .models.families import RECIPES
from .papermill_cli import PEAK_MEMORY
from .records import load_records, stage_times
from .runlock import RunFolder
from .store import atomic_write_bytes, atomic_write_json, file_sha256

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# What Fig. 5B's extra descriptor shares run: its two methods (and CLIP, which defines the floor).
FIG5B_JOB_PARAMETERS = {"02_baselines.ipynb": {"methods": ["CLIP as base model", "Cond. Multitask"]},
                 "05_hyperldm.ipynb": {"generators": ["HVAE"]}}
# What notebook 02 runs at the shares after the first when seeds run apart: the rows that read descriptors (and
# CLIP, the floor its tables are read against); the others train once per seed whatever the share.
SHARE_JOB_METHODS = ["CLIP as base model", *(name for name, recipe in RECIPES.items() if recipe.conditional)]
# Longest a single cell may run (papermill's --execution-timeout), about twice the slowest cell measured on a
# loaded 2-core CPU (quick: world-v2 CLIP training, ~43 min); a cell past it is reported by notebook and cell,
# and the notebook is run once more. None: no limit (the paper profile's cells run for hours on a GPU).
CELL_TIMEOUT_S = {"ci": 900, "quick": 5400, "paper": None}


@dataclass(frozen=True)
class Job:
    name: str          # file stem of the executed notebook, e.g. "02_baselines" or "05_hyperldm-seed1"
    notebook: str      # source notebook in notebooks/
    wave: int          # jobs of one wave may run at once; a wave starts when the previous one is done
    parameters: dict

    def fingerprint(self) -> str:
        source = (NOTEBOOKS / self.notebook).read_bytes()
        return hashlib.sha256(source + json.dumps(self.parameters, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Run:
    profile: str
    out: Path
    jobs: list[Job]
    command: str = ""
    finished: dict = field(default_factory=dict)   # job name -> {"fingerprint", "seconds", "at"}
    records: dict = field(default_factory=dict)    # record file -> SHA-256, as the finished jobs left them
    stale: list = field(default_factory=list)      # records missing or changed since then (all jobs rerun)
    cell_timeout: int | None = None                # seconds per cell; None: no limit
    failures: dict = field(default_factory=dict)   # job name -> (why it failed, the engine's error or ""), this
                                                   # invocation (for the summary and the report)
    threads: int = 1                               # every notebook's compute.threads (numerics.py)


PATH_KEYS = ("data.vqa_root", "data.meta_dir", "data.image_features")


def absolute_paths(overrides: dict) -> dict:
    """Overrides with relative input paths made absolute from where the batch was started: the notebooks run
    in notebooks/ (papermill --cwd), where `--set data.image_features=feats.npz` would name another file.
    A local checkpoint given as encoder.pretrained counts when it exists here."""
    out = dict(overrides)
    for key, value in overrides.items():
        if isinstance(value, str) and value.lower() not in ("", "none", "null") and (
                key in PATH_KEYS or (key == "encoder.pretrained" and Path(value).exists())):
            out[key] = str(Path(value).expanduser().resolve())
    return out


def default_fractions(profile: str) -> tuple[list[float], list[float]]:
    """(Table 1's descriptor shares, Fig. 5B's extra shares); ci keeps to 100% to stay fast."""
    return ([1.0], []) if profile == "ci" else ([1.0, 0.5], [0.1])


def plan_run(profile: str, out, seeds=None, fractions=None, fig5b_fractions=None, overrides=None,
             split_seeds: bool = False, cell_timeout: int | None = -1) -> Run:
    """The jobs for a run: notebooks 01-06; 02/04/05 over `seeds` x `fractions`, plus Fig. 5B's extra
    shares for its two methods (Cond. Multitask, HVAE + HyperLDM); one job per seed if `split_seeds`.
    `cell_timeout`: seconds per cell (None or 0: no limit; -1: the profile's CELL_TIMEOUT_S)."""
    out = Path(out)
    if cell_timeout == -1:
        cell_timeout = CELL_TIMEOUT_S.get(profile)
    if cell_timeout is not None and cell_timeout < 0:
        raise ValueError(f"--cell-timeout: expected seconds >= 0 (0: no limit), got {cell_timeout}")
    seeds = list(seeds) if seeds is not None else default_seeds(profile)
    table_fractions, extra_fractions = default_fractions(profile)
    fractions = list(fractions) if fractions is not None else table_fractions
    fig5b_fractions = list(fig5b_fractions) if fig5b_fractions is not None else extra_fractions
    if not seeds:
        raise ValueError("--seeds: expected at least one seed")
    for flag, values in (("--seeds", seeds), ("--fractions", fractions), ("--fig5b-fractions", fig5b_fractions)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{flag}: {twice[0]} is given more than once")
    # a bad --set fails here, naming the key, before any notebook starts
    threads = numerics.check_threads(get_config(profile, overrides).compute.threads)
    for f in fractions + fig5b_fractions:
        if not 0 < f <= 1:
            raise ValueError(f"--fractions/--fig5b-fractions: descriptor shares must lie in (0, 1], got {f}")
    if not fractions:
        raise ValueError("--fractions: expected at least one descriptor share, e.g. 1.0")
    common = {"profile": profile, "overrides": absolute_paths(overrides or {}),
              "results_dir": str((out / "records").resolve()), "figures_dir": str((out / "figures").resolve())}
    jobs = [Job("01_dataset", "01_dataset.ipynb", 0, dict(common))]

    def per_seed(stem: str, wave: int, extra: dict, suffix: str = "") -> list[Job]:
        groups = [[s] for s in seeds] if split_seeds else [seeds]
        return [Job(stem + suffix + (f"-seed{g[0]}" if split_seeds else ""), stem + ".ipynb", wave,
                    {**common, **extra, "seeds": g}) for g in groups]

    # With one process per seed, the conditioned rows' other shares are jobs of their own, so that three seeds'
    # baselines pack onto two cores rather than leaving one idle while the third seed runs alone. Jobs of a
    # wave start in this order, the longest first.
    shares_apart = split_seeds and len(fractions) > 1
    jobs += per_seed("02_baselines", 1, {"descriptor_fractions": fractions[:1] if shares_apart else fractions})
    jobs.append(Job("03_generators", "03_generators.ipynb", 1, dict(common)))
    if shares_apart:
        jobs += per_seed("02_baselines", 1, {"descriptor_fractions": fractions[1:], "methods": SHARE_JOB_METHODS},
                         "-shares")
    if fig5b_fractions:
        jobs += per_seed("02_baselines", 1, {"descriptor_fractions": fig5b_fractions,
                                             **FIG5B_JOB_PARAMETERS["02_baselines.ipynb"]}, "-fig5b")
    jobs += per_seed("04_hyperclip", 2, {"descriptor_fractions": fractions})
    # Widgets on, as in JupyterLab. Their cells used to hang batch runs now and then: papermill left the cell's
    # reply unread in its socket; papermill_cli.py polls in 1-s slices (scripts/stress_widgets.sh measures it).
    jobs += per_seed("05_hyperldm", 2, {"descriptor_fractions": fractions})
    if fig5b_fractions:
        jobs += per_seed("05_hyperldm", 2, {"descriptor_fractions": fig5b_fractions,
                                            **FIG5B_JOB_PARAMETERS["05_hyperldm.ipynb"]}, "-fig5b")
    jobs.append(Job("06_analysis", "06_analysis.ipynb", 3, dict(common)))
    missing = sorted({j.notebook for j in jobs if not (NOTEBOOKS / j.notebook).exists()})
    if missing:
        raise FileNotFoundError(f"notebooks missing from {NOTEBOOKS}: {', '.join(missing)}")
    run = Run(profile, out, jobs, cell_timeout=cell_timeout or None, threads=threads)
    progress = out / "progress.json"
    if progress.exists():
        try:
            saved = json.loads(progress.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{progress} is not a progress file written by this command ({e}); "
                             "delete it to start the run afresh") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("finished"), dict) or not all(
                isinstance(v, dict) and "fingerprint" in v for v in saved["finished"].values()):
            raise ValueError(f"{progress} is not a progress file written by this command (expected "
                             "{\"finished\": {job: {\"fingerprint\": ...}}}); delete it to start the run afresh")
        run.finished, run.records = saved["finished"], saved.get("records", {})
        run.stale = [name for name, sha in run.records.items() if not (out / "records" / name).exists()
                     or file_sha256(out / "records" / name) != sha]
        if run.stale:   # a record was deleted or changed after its notebook finished: run everything again
            run.finished = {}
    return run


def is_done(run: Run, job: Job) -> bool:
    entry = run.finished.get(job.name)
    return bool(entry) and entry["fingerprint"] == job.fingerprint() and (
        run.out / "notebooks" / f"{job.name}.ipynb").exists()


def describe(job: Job) -> str:
    """'05_hyperldm-seed1 (descriptor_fractions=[1.0, 0.5], seeds=[1])': the job and what sets it apart."""
    shown = ", ".join(f"{k}={v}" for k, v in job.parameters.items()
                      if k in ("seeds", "descriptor_fractions", "methods", "generators"))
    return f"{job.name} ({shown})" if shown else job.name


def _tied_to_this_process() -> list[str]:
    """The Python command line that runs its arguments as a child which dies with the process starting it.
    A Ray worker or a SLURM step can be killed with -9, which no handler sees; on Linux the kernel then sends
    the notebook's papermill SIGTERM (PR_SET_PDEATHSIG; set before exec, checked against a parent that died
    first), and its kernel follows (ipykernel exits when its parent goes). Elsewhere: plain Python."""
    if not sys.platform.startswith("linux"):
        return [sys.executable]
    tie = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
           "os.getppid() == int(sys.argv[1]) or sys.exit(143); "
           "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")
    return [sys.executable, "-c", tie, str(os.getpid())]


def _run_job(run: Run, job: Job, show_progress: bool, folder: RunFolder) -> tuple[Job, float, int]:
    """Execute one notebook in its own papermill process (its own kernel, in a process group of its own;
    papermill_cli.py: papermill polling in short slices), logging to logs/NAME.log and, with `show_progress`,
    to the terminal too. Its environment pins the run's thread count and CPU code paths (numerics.py)."""
    target = run.out / "notebooks" / f"{job.name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    log = run.out / "logs" / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **numerics.pinned_environment(run.threads)}
    if not show_progress:
        env["TQDM_DISABLE"] = "1"
    partial = target.with_name(f".{target.name}.running")
    cmd = [*_tied_to_this_process(), "-m", "hyperclip_lib.papermill_cli", str(NOTEBOOKS / job.notebook), str(partial),
           "-y", json.dumps(job.parameters), "--cwd", str(NOTEBOOKS), "-k", "python3",
           "--progress-bar" if show_progress else "--no-progress-bar"]
    if run.cell_timeout:
        cmd += ["--execution-timeout", str(run.cell_timeout)]
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        folder.started(proc.pid)
        for line in proc.stdout:
            handle.write(line)
            if show_progress:
                sys.stdout.write(line)
        rc = proc.wait()
        folder.finished(proc.pid)
    if rc == 0:
        partial.replace(target)
        target.with_name(f"{job.name}.FAILED.ipynb").unlink(missing_ok=True)   # an earlier try's, now superseded
    elif partial.exists():   # keep the failed notebook where the user will look for it, marked as failed
        partial.replace(target.with_name(f"{job.name}.FAILED.ipynb"))
    return job, time.perf_counter() - start, rc


def failed_cell(notebook: Path) -> str:
    """'cell [N] `first line`' of the cell papermill marked as failed in an executed notebook, or ''."""
    try:
        cells = json.loads(notebook.read_text()).get("cells", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return ""
    for cell in cells:   # an exception marks the cell; a timeout leaves only the interrupt's error output
        if cell.get("metadata", {}).get("papermill", {}).get("exception") is True or any(
                o.get("output_type") == "error" for o in cell.get("outputs", [])):
            lines = "".join(cell.get("source", "")).strip().splitlines() or [""]
            return f"cell [{cell.get('execution_count')}] `{lines[0][:80]}`"
    return ""


def timed_out(run: Run, job: Job) -> bool:
    """Did the job's last execution stop because a cell ran past `run.cell_timeout`?"""
    try:
        return "CellTimeoutError" in (run.out / "logs" / f"{job.name}.log").read_text(errors="replace")
    except OSError:
        return False


def _run_job_with_retry(run: Run, job: Job, show_progress: bool, folder: RunFolder, log) -> tuple[Job, float, int]:
    """_run_job, and once more if a cell timed out (a hang, e.g. a widget's first draw, rarely recurs)."""
    job, seconds, rc = _run_job(run, job, show_progress, folder)
    if rc != 0 and timed_out(run, job):
        cell = failed_cell(run.out / "notebooks" / f"{job.name}.FAILED.ipynb")
        log(f"[TIMEOUT] {job.name}: {cell or 'a cell'} ran past {run.cell_timeout} s; running the notebook once more")
        job, more, rc = _run_job(run, job, show_progress, folder)
        seconds += more
    return job, seconds, rc


def _save_progress(run: Run) -> None:
    run.records = {p.name: file_sha256(p) for p in sorted((run.out / "records").glob("*.json"))}
    atomic_write_json(run.out / "progress.json", {"profile": run.profile, "finished": run.finished,
                                                   "records": run.records}, indent=1)


def _exit_on(signum, frame):
    raise SystemExit(128 + signum)


def execute(run: Run, jobs: int = 1, force: bool = False, log=print, executor=None) -> dict[str, str]:
    """Run every job not already done, wave by wave, on `executor` (default: LocalExecutor, this machine; see
    executors.py for Ray and SLURM); returns job name -> "done" | "cached" | "failed" | "not run". Holds the
    run folder's lock throughout; on SIGTERM, SIGHUP or Ctrl-C the running notebooks are stopped too."""
    if run.stale:
        log(f"[records] {', '.join(run.stale)} missing or changed since its notebook finished: running every notebook")
    handlers = {sig: signal.signal(sig, _exit_on) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with RunFolder(run.out) as folder:
            return _execute(run, jobs, force, log, folder, executor or LocalExecutor())
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


class LocalExecutor:
    """This machine: one papermill process per job, `jobs` at a time, each watched by a thread of the batch.

    An executor's `run_wave(run, todo, jobs, log, folder)` yields (job, seconds, rc, engine_error) as the jobs
    of one wave finish; when the batch is interrupted inside it, it starts nothing more and stops what runs."""

    def run_wave(self, run: Run, todo: list[Job], jobs: int, log, folder: RunFolder):
        pool = ThreadPoolExecutor(max(1, min(jobs, len(todo))))

        def start(job: Job):
            log(f"[start] {describe(job)}")
            return _run_job_with_retry(run, job, jobs == 1, folder, log)

        running = [pool.submit(start, j) for j in todo]
        try:
            for future in as_completed(running):
                yield (*future.result(), "")
        except BaseException:   # a signal or Ctrl-C: start nothing more and stop what runs; a plain shutdown
            pool.shutdown(wait=False, cancel_futures=True)   # would wait for every queued notebook first
            folder.stop_all()
            raise
        pool.shutdown()


def peak_memory_mib(run: Run, job: Job) -> int | None:
    """The peak resident memory of the job's last kernel, as papermill_cli logged it (None if not logged)."""
    try:
        lines = (run.out / "logs" / f"{job.name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(PEAK_MEMORY):
            try:
                return int(line.split()[-2])
            except (IndexError, ValueError):
                return None
    return None


def _note_result(run: Run, status: dict, job: Job, seconds: float, rc: int, log, engine_error: str = "") -> None:
    if rc == 0:
        status[job.name] = "done"
        run.failures.pop(job.name, None)
        run.finished[job.name] = {"fingerprint": job.fingerprint(), "seconds": round(seconds, 1),
                                  "peak_mib": peak_memory_mib(run, job),
                                  "at": datetime.datetime.now().isoformat(timespec="seconds")}
        _save_progress(run)
        log(f"[done] {job.name} in {seconds / 60:.1f} min")
    else:
        status[job.name] = "failed"
        failed = run.out / "notebooks" / f"{job.name}.FAILED.ipynb"
        cell = failed_cell(failed)
        cause = f" ({'timed out' if timed_out(run, job) else 'failed'} in {cell})" if cell else ""
        where = f"{run.out / 'logs' / (job.name + '.log')} and {failed}" if not engine_error else \
            "the engine's error below (the notebook did not return)"
        run.failures[job.name] = (f"after {seconds / 60:.1f} min{cause}: see {where}", engine_error.rstrip())
        log(f"[FAILED] {job.name} {run.failures[job.name][0]}" + (f"\n\n{engine_error}" if engine_error else ""))


def _execute(run: Run, jobs: int, force: bool, log, folder: RunFolder, executor) -> dict[str, str]:
    status = {}
    upstream_ran = False   # later notebooks read what earlier ones wrote: once one runs, the rest run too
    for wave in sorted({j.wave for j in run.jobs}):
        todo = []
        for job in (j for j in run.jobs if j.wave == wave):
            if not force and not upstream_ran and is_done(run, job):
                status[job.name] = "cached"
                log(f"[skip] {job.name}: finished earlier with the same notebook and parameters")
            else:
                todo.append(job)
        upstream_ran = upstream_ran or bool(todo)
        if any(s == "failed" for s in status.values()):
            status.update({j.name: "not run" for j in todo})
            continue
        if todo:
            for job, seconds, rc, engine_error in executor.run_wave(run, todo, jobs, log, folder):
                _note_result(run, status, job, seconds, rc, log, engine_error)
    return status


def markdown_table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def status_rows(run: Run, status: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(job, its status in this invocation, minutes and peak memory (MiB) of its kernel in its latest successful
    execution, or '') per job."""
    rows = []
    for job in run.jobs:
        entry = run.finished.get(job.name, {})
        seconds, peak = entry.get("seconds"), entry.get("peak_mib")
        rows.append((job.name, status.get(job.name, "?"), "" if seconds is None else f"{seconds / 60:.1f}",
                     "" if peak is None else str(peak)))
    return rows


def write_summary(run: Run, status: dict[str, str], wall_s: float) -> Path:
    """summary.md: the command, each job's status and time, why any failed (an engine's traceback included),
    and Tables 1 and 4 from the run's records."""
    lines = [f"# Run `{run.out}` ({run.profile} profile)", "", f"Command: `{run.command}`", "",
             f"Finished {datetime.datetime.now().isoformat(timespec='seconds')}; this invocation took "
             f"{wall_s / 60:.1f} min.", "", "| notebook | status | minutes | peak MiB |", "|---|---|---|---|"]
    lines += [f"| {name} | {state} | {minutes} | {peak} |" for name, state, minutes, peak in status_rows(run, status)]
    total = sum(run.finished.get(j.name, {}).get("seconds", 0) for j in run.jobs)
    lines += ["", f"Sum of the notebook times above (each from its latest execution; a cached stage costs little): "
              f"{total / 60:.1f} min.", ""]
    if run.failures:
        lines += ["## Failures", ""]
        for name, (why, engine_error) in run.failures.items():
            lines += [f"- **{name}** {why}"] + (["", "```", engine_error, "```"] if engine_error else []) + [""]
    records = run.out / "records"
    if records.exists() and any(records.glob("*.json")):
        for title, table in results_tables(records).items():
            lines += [f"## {title}", "", markdown_table(table), ""]
        lines += ["## Time per stage", "", "Summed over the cached artifacts behind the records (each once; a cached "
                  "one reports the time it took when built). Notebook 01 prints its own stages' times.", "",
                  markdown_table(stage_times(load_records(records))), ""]
    path = run.out / "summary.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
