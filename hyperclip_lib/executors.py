"""Where a batch's notebook jobs run: `hyperclip run-notebooks --executor NAME`.

    local            this machine, a papermill process per job (batch.LocalExecutor; the default)
    ray              Ray tasks, each asking for its CPUs (and GPUs, fractions allowed), on the cluster at
                     --ray-address or RAY_ADDRESS, else on a Ray instance started on this machine
    slurm            a SLURM job array per wave, through submitit, at most --jobs of it running at once
    submitit-local   submitit's local executor: the SLURM code path run on this machine, to test it

The batch keeps the plan, the resume rules, progress.json and summary.md on the machine that runs
`hyperclip run-notebooks`; an engine only places and runs one notebook job (`run_job_on_node`) and returns its
(job, seconds, return code), or its own error when the job never returned (a worker killed, a node lost). The
engines do the rest: Ray retries a task whose worker died, SLURM queues and places, and both keep their logs
(Ray: /tmp/ray/session_latest/logs on each node; submitit: <run>/logs/submitit). Every node must see the
repository and its .venv at the same path, $HYPERCLIP_HOME and the run folder (docs/cluster.md).
"""
from __future__ import annotations

import math
import os
import time

from .batch import Job, LocalExecutor, Run, _run_job_with_retry, describe

EXECUTORS = ("local", "ray", "slurm", "submitit-local")
POLL_S = 2.0   # how often a remote wave is checked; short waits keep the batch's signal handlers responsive


class _NoGroups:
    """Stands in for the run folder's process-group list on a worker node: there the notebook is tied to the
    worker process instead (batch._tied_to_this_process), which the engine stops."""
    def started(self, pgid: int) -> None: ...
    def finished(self, pgid: int) -> None: ...


def forwarded_environment() -> dict[str, str]:
    """The batch's settings a notebook reads from its environment ($HYPERCLIP_HOME, HF_HUB_OFFLINE, ...): a Ray
    worker inherits its node's environment, not the batch's, so the jobs carry them."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(("HYPERCLIP_", "HF_")) or k in ("TQDM_DISABLE", "MPLBACKEND")}


def run_job_on_node(run: Run, job: Job, environment: dict[str, str]) -> tuple[str, float, int]:
    """One notebook job on the node an engine placed it on: (job name, seconds, papermill's return code)."""
    os.environ.update(environment)
    _, seconds, rc = _run_job_with_retry(run, job, False, _NoGroups(), print)
    return job.name, seconds, rc


class RayExecutor:
    def __init__(self, address: str | None = None, cpus_per_job: float | None = None, gpus_per_job: float = 0.0,
                 retries: int = 1):
        self.address, self.cpus_per_job, self.gpus_per_job, self.retries = address, cpus_per_job, gpus_per_job, retries

    def _connect(self):
        import ray
        if not ray.is_initialized():
            # log_to_driver off: each notebook's output is in <run>/logs/NAME.log already
            ray.init(address=self.address or os.environ.get("RAY_ADDRESS"), log_to_driver=False)
        return ray

    def run_wave(self, run: Run, todo: list[Job], jobs: int, log, folder):
        ray = self._connect()
        task = ray.remote(run_job_on_node)
        cpus = self.cpus_per_job or run.threads
        needs = dict(num_cpus=cpus, num_gpus=self.gpus_per_job, max_retries=self.retries, retry_exceptions=False)
        environment = forwarded_environment()
        queued, running = list(todo), {}   # ObjectRef -> (job, submitted at)
        try:
            while queued or running:
                while queued and len(running) < jobs:
                    job = queued.pop(0)
                    ref = task.options(name=f"notebook {job.name}", **needs).remote(run, job, environment)
                    running[ref] = (job, time.perf_counter())
                    log(f"[start] {describe(job)} as a Ray task ({cpus} CPU, {self.gpus_per_job} GPU)")
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    job, submitted = running.pop(ref)
                    try:
                        _, seconds, rc = ray.get(ref)
                        yield job, seconds, rc, ""
                    except Exception as e:   # the task's worker died more often than Ray retries, or alike
                        yield job, time.perf_counter() - submitted, -1, f"{type(e).__name__}: {e}"
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)   # kills the worker; its notebook is tied to it
            raise


class SubmititExecutor:
    def __init__(self, cluster: str = "slurm", cpus_per_job: float | None = None, gpus_per_job: float = 0.0,
                 parameters: dict | None = None):
        if gpus_per_job != int(gpus_per_job):
            raise ValueError(f"--gpus-per-job: SLURM allocates whole GPUs, got {gpus_per_job} "
                             "(fractions need --executor ray)")
        self.cluster, self.cpus_per_job, self.gpus_per_job = cluster, cpus_per_job, int(gpus_per_job)
        self.parameters = {"timeout_min": 24 * 60, **(parameters or {})}   # submitit's own default is 5 min

    def run_wave(self, run: Run, todo: list[Job], jobs: int, log, folder):
        import submitit
        cpus = max(1, math.ceil(self.cpus_per_job or run.threads))   # SLURM allocates whole CPUs
        executor = submitit.AutoExecutor(folder=run.out / "logs" / "submitit", cluster=self.cluster)
        executor.update_parameters(name="hyperclip", cpus_per_task=cpus, gpus_per_node=self.gpus_per_job,
                                   slurm_array_parallelism=jobs, **self.parameters)
        submitted = time.perf_counter()
        n = len(todo)
        array = executor.map_array(run_job_on_node, [run] * n, todo, [forwarded_environment()] * n)
        for job, sjob in zip(todo, array):
            log(f"[start] {describe(job)} as {self.cluster} job {sjob.job_id} ({cpus} CPU, {self.gpus_per_job} GPU)")
        waiting = dict(zip(array, todo))
        try:
            while waiting:
                for sjob in [s for s in waiting if s.done()]:
                    job = waiting.pop(sjob)
                    try:
                        _, seconds, rc = sjob.result()
                        yield job, seconds, rc, ""
                    except Exception as e:   # submitit's error carries the job's traceback and its log's path
                        yield job, time.perf_counter() - submitted, -1, f"{type(e).__name__}: {e}"
                time.sleep(POLL_S)
        except BaseException:
            for sjob in waiting:
                sjob.cancel(check=False)
            raise


def make_executor(name: str, cpus_per_job: float | None = None, gpus_per_job: float = 0.0,
                  ray_address: str | None = None, slurm_parameters: dict | None = None):
    """The executor `--executor NAME` asks for, with its engine's settings checked."""
    if cpus_per_job is not None and cpus_per_job <= 0:
        raise ValueError(f"--cpus-per-job: expected a positive number, got {cpus_per_job}")
    if gpus_per_job < 0:
        raise ValueError(f"--gpus-per-job: expected 0 or more, got {gpus_per_job}")
    if name == "local":
        if gpus_per_job or slurm_parameters or ray_address or cpus_per_job:
            raise ValueError("--cpus-per-job, --gpus-per-job, --slurm and --ray-address need --executor ray or slurm "
                             "(a notebook's threads are its config's: --set compute.threads=N)")
        return LocalExecutor()
    if name == "ray":
        if slurm_parameters:
            raise ValueError("--slurm needs --executor slurm or submitit-local")
        return RayExecutor(ray_address, cpus_per_job, gpus_per_job)
    if name in ("slurm", "submitit-local"):
        if ray_address:
            raise ValueError("--ray-address needs --executor ray")
        return SubmititExecutor("local" if name == "submitit-local" else "slurm", cpus_per_job, gpus_per_job,
                                slurm_parameters)
    raise ValueError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {name!r}")
