"""Batch reproduction: the run plan, resuming, and the same numbers from two independent runs."""
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hyperclip_lib.batch as batch
from hyperclip_lib.batch import Job, _save_progress, execute, is_done, plan_run
from hyperclip_lib.runlock import RunFolder, RunFolderBusy

REPO = Path(__file__).resolve().parent.parent
TIMING_FIELDS = {"timings"}   # seconds differ from run to run; everything else must not


def test_the_plan_covers_every_notebook_seed_and_share(tmp_path):
    run = plan_run("quick", tmp_path, seeds=[0, 1, 2], fractions=[1.0, 0.5], fig5b_fractions=[0.1])
    names = [j.name for j in run.jobs]
    assert names == ["01_dataset", "02_baselines", "03_generators", "02_baselines-fig5b", "04_hyperclip",
                     "05_hyperldm", "05_hyperldm-fig5b", "06_analysis"]
    jobs = {j.name: j for j in run.jobs}
    assert jobs["02_baselines"].parameters["seeds"] == [0, 1, 2]
    assert jobs["05_hyperldm"].parameters["descriptor_fractions"] == [1.0, 0.5]
    assert jobs["05_hyperldm-fig5b"].parameters["generators"] == ["HVAE"]
    assert jobs["02_baselines-fig5b"].parameters["methods"] == ["CLIP as base model", "Cond. Multitask"]
    assert all(j.parameters["results_dir"] == str((tmp_path / "records").resolve()) for j in run.jobs)
    assert [j.wave for j in run.jobs] == sorted(j.wave for j in run.jobs) and run.jobs[-1].wave > run.jobs[-2].wave

    split = plan_run("quick", tmp_path, seeds=[0, 1], fractions=[1.0], fig5b_fractions=[], split_seeds=True)
    assert [j.name for j in split.jobs if j.notebook == "04_hyperclip.ipynb"] == ["04_hyperclip-seed0", "04_hyperclip-seed1"]
    assert [j.parameters["seeds"] for j in split.jobs if j.notebook == "05_hyperldm.ipynb"] == [[0], [1]]
    assert plan_run("ci", tmp_path).jobs[1].parameters["seeds"] == [0]

    # one process per seed: the conditioned rows' further shares are jobs of their own, after the longest ones
    apart = plan_run("quick", tmp_path, seeds=[0, 1], fractions=[1.0, 0.5], fig5b_fractions=[], split_seeds=True)
    wave = [j for j in apart.jobs if j.wave == 1]
    assert [j.name for j in wave] == ["02_baselines-seed0", "02_baselines-seed1", "03_generators",
                                      "02_baselines-shares-seed0", "02_baselines-shares-seed1"]
    assert wave[0].parameters["descriptor_fractions"] == [1.0] and wave[0].parameters.get("methods") is None
    assert wave[3].parameters["descriptor_fractions"] == [0.5]
    assert wave[3].parameters["methods"] == ["CLIP as base model", "Cond. Multitask", "Cond. Multitask FiLM",
                                             "Cond. HNet-MAML"]


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": []}, "--seeds"),
    ({"fractions": [1.5]}, r"\(0, 1\]"),
    ({"fig5b_fractions": [0.0]}, r"\(0, 1\]"),
    ({"fractions": []}, "--fractions"),
    ({"seeds": [0, 0]}, "--seeds: 0 is given more than once"),
    ({"fractions": [1.0, 0.5, 1.0]}, "--fractions: 1.0 is given more than once"),
])
def test_bad_run_settings_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_run("quick", tmp_path, **kwargs)


def test_a_cell_past_its_timeout_is_named_and_its_notebook_runs_once_more(tmp_path, monkeypatch):
    """A real papermill run of a notebook whose first execution hangs in its second cell (as a widget's first
    draw once did) and whose second does not."""
    import nbformat
    marker = tmp_path / "hung-once"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import pathlib, time"),
        nbformat.v4.new_code_cell(f"first = not pathlib.Path({str(marker)!r}).exists()\n"
                                  f"pathlib.Path({str(marker)!r}).touch()\n"
                                  "time.sleep(60 if first else 0)")])
    nbformat.write(nb, tmp_path / "hang.ipynb")
    monkeypatch.setattr(batch, "NOTEBOOKS", tmp_path)
    run = batch.Run("ci", tmp_path / "run", [Job("hang", "hang.ipynb", 0, {})], cell_timeout=5)
    messages = []
    with RunFolder(run.out) as folder:
        job, seconds, rc = batch._run_job_with_retry(run, run.jobs[0], False, folder, messages.append)
    assert rc == 0 and (run.out / "notebooks" / "hang.ipynb").exists()
    assert not (run.out / "notebooks" / "hang.FAILED.ipynb").exists()
    assert len(messages) == 1 and messages[0].startswith("[TIMEOUT] hang: cell [2] `first = not pathlib.Path(")
    assert messages[0].endswith("ran past 5 s; running the notebook once more")
    assert 5 <= seconds < 60


def test_sigterm_stops_the_running_notebooks_and_starts_no_queued_one(tmp_path, monkeypatch):
    """Real papermill runs of three notebooks that would sleep 120 s, two at a time; SIGTERM after they start."""
    import nbformat
    import threading
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(120)")]),
                   tmp_path / "sleep.ipynb")
    monkeypatch.setattr(batch, "NOTEBOOKS", tmp_path)
    run = batch.Run("ci", tmp_path / "run", [Job(f"sleep{i}", "sleep.ipynb", 0, {}) for i in range(3)])
    logs = run.out / "logs"
    threading.Thread(target=lambda: (_wait_for(lambda: len(list(logs.glob("*.log"))) == 2, 120), time.sleep(5),
                                     os.kill(os.getpid(), signal.SIGTERM)), daemon=True).start()
    start = time.monotonic()
    with pytest.raises(SystemExit):
        execute(run, jobs=2, log=lambda *_: None)
    assert time.monotonic() - start < 90                            # not the 120 s the notebooks would sleep
    assert sorted(p.name for p in logs.glob("*.log")) == ["sleep0.log", "sleep1.log"]   # sleep2 never started
    left = subprocess.run(["pgrep", "-f", str(run.out)], capture_output=True, text=True).stdout.split()
    assert left == [], f"papermill or kernel processes still running: {left}"


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_the_cell_timeout_follows_the_profile_and_can_be_lifted(tmp_path):
    assert plan_run("ci", tmp_path).cell_timeout == batch.CELL_TIMEOUT_S["ci"]
    assert plan_run("paper", tmp_path).cell_timeout is None
    assert plan_run("quick", tmp_path, cell_timeout=0).cell_timeout is None
    with pytest.raises(ValueError, match="--cell-timeout"):
        plan_run("quick", tmp_path, cell_timeout=-5)


def test_a_bad_override_is_named_before_any_notebook_starts(tmp_path):
    with pytest.raises(KeyError, match="nonexistent"):
        plan_run("ci", tmp_path, overrides={"world.nonexistent": "1"})
    with pytest.raises(ValueError, match="world.n_images"):
        plan_run("ci", tmp_path, overrides={"world.n_images": "many"})


@pytest.mark.parametrize("content", ["{not json", '{"finished": []}', "null", '{"finished": {"01_dataset": 3}}'])
def test_a_corrupt_progress_file_is_named(tmp_path, content):
    (tmp_path / "progress.json").write_text(content)
    with pytest.raises(ValueError, match="progress.json"):
        plan_run("ci", tmp_path)


def test_a_record_deleted_or_changed_after_its_run_makes_every_notebook_run_again(tmp_path):
    run = plan_run("ci", tmp_path)
    (tmp_path / "records").mkdir()
    for name in ("a.json", "b.json"):
        (tmp_path / "records" / name).write_text('{"method": "x"}')
    run.finished = {j.name: {"fingerprint": j.fingerprint(), "seconds": 1.0, "at": "earlier"} for j in run.jobs}
    _save_progress(run)
    assert plan_run("ci", tmp_path).finished == run.finished and not plan_run("ci", tmp_path).stale
    (tmp_path / "records" / "a.json").write_text('{"meth')   # truncated
    (tmp_path / "records" / "b.json").unlink()
    again = plan_run("ci", tmp_path)
    assert again.stale == ["a.json", "b.json"] and again.finished == {}


def test_a_second_batch_on_one_run_folder_is_refused_and_a_dead_ones_notebooks_are_stopped(tmp_path):
    with RunFolder(tmp_path):
        with pytest.raises(RunFolderBusy, match=f"in use by another.*pid.*{os.getpid()}"):
            RunFolder(tmp_path).__enter__()
    # a batch killed with -9 leaves its lock listing the process groups of its notebooks, still running
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 999999, "groups": [orphan.pid]}))
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    (tmp_path / "notebooks" / ".03_generators.ipynb.running").write_text("{}")
    with RunFolder(tmp_path):
        assert orphan.wait(timeout=10) is not None
        assert not (tmp_path / "notebooks" / ".03_generators.ipynb.running").exists()


def test_resume_skips_finished_jobs_until_something_before_them_reruns(tmp_path):
    run = plan_run("ci", tmp_path)
    done = {j.name: {"fingerprint": j.fingerprint(), "seconds": 1.0, "at": "earlier"} for j in run.jobs}
    (tmp_path / "notebooks").mkdir()
    for j in run.jobs:
        (tmp_path / "notebooks" / f"{j.name}.ipynb").write_text("{}")
    run.finished = dict(done)
    assert all(is_done(run, j) for j in run.jobs)
    assert execute(run, log=lambda *_: None) == {j.name: "cached" for j in run.jobs}

    changed = Job("03_generators", "03_generators.ipynb", 1, {**run.jobs[3].parameters, "seed": 7})
    assert not is_done(run, changed)   # new parameters: not the notebook that finished
    (tmp_path / "notebooks" / "06_analysis.ipynb").unlink()
    assert not is_done(run, run.jobs[-1])   # its executed notebook is gone


def test_relative_input_paths_are_made_absolute_where_the_batch_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt.pt").write_bytes(b"")
    run = plan_run("ci", tmp_path / "run", overrides={"data.image_features": "feats.npz", "data.meta_dir": "none",
                                                      "encoder.pretrained": "ckpt.pt", "world.n_images": "300"})
    given = run.jobs[0].parameters["overrides"]
    assert given["data.image_features"] == str(tmp_path / "feats.npz") and given["data.meta_dir"] == "none"
    assert given["encoder.pretrained"] == str(tmp_path / "ckpt.pt") and given["world.n_images"] == "300"
    assert plan_run("ci", tmp_path / "r2", overrides={"encoder.pretrained": "openai"}).jobs[0].parameters[
        "overrides"]["encoder.pretrained"] == "openai"   # a tag, not a file here


def test_a_notebook_computes_with_its_configs_threads_and_pinned_cpu_paths_whatever_the_wave(tmp_path, monkeypatch):
    """The kernel of a batch job starts with compute.threads threads, ATen's AVX2 kernels and MKL's COMPATIBLE
    branch, though the batch's own environment asks for others: read in a kernel that never imports
    hyperclip_lib (which would pin them itself)."""
    import nbformat
    cell = ("import json, os, torch\n"
            "print('IDENTITY', json.dumps({'threads': torch.get_num_threads(), 'cpu_capability': "
            "torch.backends.cpu.get_cpu_capability(), 'MKL_CBWR': os.environ.get('MKL_CBWR')}))")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), tmp_path / "probe.ipynb")
    run = plan_run("ci", tmp_path / "run")   # compute.threads 1; torch alone would take every core (2 or more)
    assert run.threads == 1
    job = Job("probe", str(tmp_path / "probe.ipynb"), 0, {})
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    with RunFolder(run.out) as folder:
        _, _, rc = batch._run_job(run, job, False, folder)
    assert rc == 0
    printed = json.loads((run.out / "notebooks" / "probe.ipynb").read_text())["cells"][0]["outputs"][0]["text"]
    identity = json.loads("".join(printed).split("IDENTITY ", 1)[1])
    assert identity == {"threads": 1, "cpu_capability": "AVX2", "MKL_CBWR": "COMPATIBLE"}
    assert 50 < batch.peak_memory_mib(run, job) < 4000   # its kernel's peak resident memory, as logged
    with pytest.raises(ValueError, match="compute.threads: expected 1 or more"):
        plan_run("ci", tmp_path / "bad", overrides={"compute.threads": 0})


@pytest.mark.parametrize("args, message", [
    (["--executor", "local", "--gpus-per-job", "1"], "--gpus-per-job, --slurm and --ray-address need"),
    (["--executor", "slurm", "--gpus-per-job", "0.5"], "SLURM allocates whole GPUs, got 0.5"),
    (["--executor", "ray", "--slurm", "slurm_partition=gpu"], "--slurm needs --executor slurm"),
    (["--executor", "slurm", "--slurm", "partition"], "--slurm: expected KEY=VALUE"),
    (["--executor", "submitit-local", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--cpus-per-job", "0"], "--cpus-per-job: expected a positive number"),
    (["--cpus-per-job", "2"], "--cpus-per-job, --gpus-per-job, --slurm and --ray-address need --executor ray"),
])
def test_bad_executor_settings_are_named_before_any_notebook_starts(tmp_path, capsys, args, message):
    from hyperclip_lib.cli import main
    assert main(["run-notebooks", "--profile", "ci", "--out", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _batch(out: Path, home: Path, wait: bool = True, *extra: str, prefix=(), env=None):
    env = {**os.environ, "HYPERCLIP_HOME": str(home), "TQDM_DISABLE": "1", **(env or {})}
    # both shares, so that with --jobs 2 the conditioned rows' second share runs as jobs of its own
    cmd = [*prefix, sys.executable, "-m", "hyperclip_lib.cli", "run-notebooks", "--profile", "ci", "--out", str(out),
           "--fractions", "1.0,0.5", *extra]
    if not wait:   # its output goes to OUT.log beside the run folder
        with open(out.with_name(out.name + ".log"), "w") as log:
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """One `ci` batch from an empty cache on the local executor: (run folder, its now warm cache)."""
    root = tmp_path_factory.mktemp("ci_run")
    done = _batch(root / "a", root / "home_a")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "a", root / "home_a"


def _numbers(records: Path) -> dict:
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING_FIELDS}
            for p in sorted(records.glob("*.json"))}


def test_two_runs_from_empty_caches_give_the_same_numbers_and_a_third_resumes(tmp_path, ci_run):
    """The reproducibility contract (numerics.py): the fixture ran one notebook at a time on every core the
    machine has; this run, two at a time, confined to one core, with more threads asked for in its environment
    and notebook 02's second share as a job of its own, gives byte-identical records (timings aside)."""
    run_a, home_a = ci_run
    second = _batch(tmp_path / "b", tmp_path / "home_b", True, "--jobs", "2",
                    prefix=["taskset", "-c", "0"], env={"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"})
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[start] 02_baselines-shares-seed0" in second.stdout
    a, b = _numbers(run_a / "records"), _numbers(tmp_path / "b" / "records")
    assert len(a) >= 14 and a.keys() == b.keys()
    assert {"cond-multitask_seed0_q50.json", "cond-hnet-maml_seed0_q50.json"} <= a.keys()
    assert a == b   # every accuracy, per task too, and the config hashes
    record = next(iter(a.values()))
    assert len(record["config_hash"]) == 16 and {"python", "torch", "numpy"} <= record["versions"].keys()
    for r in a.values():   # how each stage behind a record was computed
        assert {"world_clip", "features"} <= r["compute"].keys()
        assert all(s["threads"] == 1 and s["mkl_cbwr"] == "COMPATIBLE" for s in r["compute"].values())
    assert a["uncond-multitask_seed0_q100.json"]["compute"]["baseline"]["device"] == "cpu"
    assert a["hnet-hyperclip-guidance_seed0_q100.json"]["compute"]["guidance"]["threads"] == 1
    summary = (run_a / "summary.md").read_text()
    assert "Table 1 (ci)" in summary and "| 06_analysis | done |" in summary
    assert re.search(r"\| 01_dataset \| done \| [\d.]+ \| \d{3,} \|", summary)   # minutes, peak MiB
    assert "## Time per stage" in summary and "| hyperldm | sample_s | 4 |" in summary   # HNet's and HVAE's, 2 shares
    assert (run_a / "figures" / "06_fig5a_gamma_ci.png").stat().st_size > 0
    index = (run_a / "report" / "index.html").read_text()   # the browsable report: tables, figures, notebooks
    assert "Table 1 (ci)" in index and '<img src="../figures/06_fig5a_gamma_ci.png"' in index
    for job in plan_run("ci", run_a).jobs:
        assert f'<a href="notebooks/{job.name}.html">{job.name}</a>' in index
        page = (run_a / "report" / "notebooks" / f"{job.name}.html").read_text()
        text = html.unescape(re.sub(r"<[^>]+>", "", page))   # the code as a reader sees it, highlighting gone
        assert "from hyperclip_lib" in text and "jp-InputArea" in page and "jp-OutputArea-output" in page

    again = _batch(run_a, home_a)
    assert again.returncode == 0 and again.stdout.count("[skip]") == 6 and "[start]" not in again.stdout

    # kill -9 mid-notebook (the cache is warm, so the run is quick): the rerun stops the orphaned notebook,
    # and its records are those of an uninterrupted run
    killed = _batch(tmp_path / "c", home_a, wait=False)
    deadline = time.monotonic() + 300
    while not (tmp_path / "c" / "notebooks" / "01_dataset.ipynb").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    killed.kill()
    killed.wait()
    orphans = json.loads((tmp_path / "c" / "run.lock").read_text())["groups"]
    rerun = _batch(tmp_path / "c", home_a)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _numbers(tmp_path / "c" / "records") == a
    for pgid in orphans:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)


def _notebook_process(marker: str) -> tuple[int, int] | None:
    """(parent, pid) of the papermill process writing the notebook whose file name contains `marker`."""
    table = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    for line in table.splitlines():
        pid, ppid, args = line.split(None, 2)
        if "papermill" in args and marker in args:
            return int(ppid), int(pid)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return not state.startswith("Z")


def test_ray_gives_the_local_records_and_reruns_a_notebook_whose_worker_was_killed(tmp_path, ci_run):
    """The ci batch as Ray tasks on a Ray instance started by the batch, two at a time; the Ray worker running
    notebook 01 is killed with -9: its notebook dies with it, Ray runs the task again, and the records are
    those of the local executor."""
    run_a, home_a = ci_run
    out = tmp_path / "ray"
    proc = _batch(out, home_a, False, "--executor", "ray", "--jobs", "2")
    _wait_for(lambda: _notebook_process(".01_dataset.ipynb.running") is not None, 300)
    worker, papermill = _notebook_process(".01_dataset.ipynb.running")
    time.sleep(3)
    os.kill(worker, signal.SIGKILL)
    _wait_for(lambda: not _alive(papermill), 30)
    assert not _alive(papermill), "the killed worker's notebook is still running"
    assert proc.wait(timeout=1800) == 0, out.with_name("ray.log").read_text()[-3000:]
    log = out.with_name("ray.log").read_text()
    assert "[start] 01_dataset as a Ray task" in log and "[FAILED]" not in log
    assert _numbers(out / "records") == _numbers(run_a / "records")
    assert (out / "report" / "index.html").exists()


def test_submitit_gives_the_local_records(tmp_path, ci_run):
    run_a, home_a = ci_run
    done = _batch(tmp_path / "submitit", home_a, True, "--executor", "submitit-local", "--jobs", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "as local job" in done.stdout
    assert _numbers(tmp_path / "submitit" / "records") == _numbers(run_a / "records")
    assert any((tmp_path / "submitit" / "logs" / "submitit").glob("*_result.pkl"))


def test_a_job_the_engine_lost_is_named_with_its_traceback_and_takes_its_notebook_down(tmp_path):
    """submitit's local executor runs a notebook that would sleep 120 s; its task process is killed with -9:
    the batch reports the job failed with submitit's error in the summary, and no papermill is left."""
    import nbformat
    import threading
    from hyperclip_lib.executors import make_executor
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(120)")]),
                   tmp_path / "sleep.ipynb")
    run = batch.Run("ci", tmp_path / "run", [Job("sleep", str(tmp_path / "sleep.ipynb"), 0, {}),
                                             Job("after", str(tmp_path / "sleep.ipynb"), 1, {})])
    found = {}

    def kill_the_task():
        _wait_for(lambda: _notebook_process(".sleep.ipynb.running") is not None, 120)
        found["task"], found["papermill"] = _notebook_process(".sleep.ipynb.running")
        time.sleep(2)
        os.kill(found["task"], signal.SIGKILL)

    threading.Thread(target=kill_the_task, daemon=True).start()
    start = time.monotonic()
    status = execute(run, jobs=1, log=lambda *_: None, executor=make_executor("submitit-local"))
    assert status == {"sleep": "failed", "after": "not run"} and time.monotonic() - start < 100
    _wait_for(lambda: not _alive(found["papermill"]), 30)
    assert not _alive(found["papermill"])
    summary = batch.write_summary(run, status, 1.0).read_text()
    assert "## Failures" in summary and "**sleep**" in summary and "the engine's error below" in summary
    assert "Error" in summary.split("**sleep**")[1]   # submitit's exception, with what it knows of the job
