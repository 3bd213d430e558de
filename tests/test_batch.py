"""Batch reproduction: the run plan, resuming, and the same numbers from two independent runs."""
import json
import os
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
    assert names == ["01_dataset", "02_baselines", "02_baselines-fig5b", "03_generators", "04_hyperclip",
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
        job, seconds, rc = batch._run_job_with_retry(run, run.jobs[0], 1, False, folder, messages.append)
    assert rc == 0 and (run.out / "notebooks" / "hang.ipynb").exists()
    assert not (run.out / "notebooks" / "hang.FAILED.ipynb").exists()
    assert len(messages) == 1 and messages[0].startswith("[TIMEOUT] hang: cell [2] `first = not pathlib.Path(")
    assert messages[0].endswith("ran past 5 s; running the notebook once more")
    assert 5 <= seconds < 60


def test_sigterm_stops_the_running_notebooks_and_starts_no_queued_one(tmp_path, monkeypatch):
    """Real papermill runs of three notebooks that would sleep 120 s, two at a time; SIGTERM after they start."""
    import nbformat
    import signal
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


def test_each_wave_shares_the_cores_among_the_notebooks_it_runs_at_once(tmp_path, monkeypatch):
    """A notebook alone in its wave (01, 06) gets every core; a full wave of 2 at a time, half each."""
    run = plan_run("quick", tmp_path, seeds=[0, 1], split_seeds=True)
    threads = {}

    def fake_run_job(run, job, n_threads, show_progress, folder):
        threads[job.name] = n_threads
        (run.out / "notebooks").mkdir(exist_ok=True)
        (run.out / "notebooks" / f"{job.name}.ipynb").write_text("{}")
        return job, 0.0, 0

    monkeypatch.setattr(batch, "_run_job", fake_run_job)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 4)
    assert set(execute(run, jobs=2, log=lambda *_: None).values()) == {"done"}
    assert threads["01_dataset"] == 4 and threads["06_analysis"] == 4
    assert threads["02_baselines-seed0"] == 2 and threads["05_hyperldm-seed1"] == 2
    assert batch.wave_threads(jobs=3, wave_size=2, cpus=12) == 6 and batch.wave_threads(8, 8, cpus=2) == 1


def _batch(out: Path, home: Path, wait: bool = True):
    env = {**os.environ, "HYPERCLIP_HOME": str(home), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "hyperclip_lib.cli", "run-notebooks", "--profile", "ci", "--out", str(out)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)


def _numbers(records: Path) -> dict:
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING_FIELDS}
            for p in sorted(records.glob("*.json"))}


def test_two_runs_from_empty_caches_give_the_same_numbers_and_a_third_resumes(tmp_path):
    first, second = _batch(tmp_path / "a", tmp_path / "home_a"), _batch(tmp_path / "b", tmp_path / "home_b")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    a, b = _numbers(tmp_path / "a" / "records"), _numbers(tmp_path / "b" / "records")
    assert len(a) >= 14 and a.keys() == b.keys()
    assert a == b   # every accuracy, per task too, and the config hashes
    record = next(iter(a.values()))
    assert len(record["config_hash"]) == 16 and {"python", "torch", "numpy"} <= record["versions"].keys()
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "Table 1 (ci)" in summary and "| 06_analysis | done |" in summary
    assert "## Time per stage" in summary and "| hyperldm | sample_s | 2 |" in summary   # HNet's and HVAE's
    assert (tmp_path / "a" / "figures" / "06_fig5a_gamma_ci.png").stat().st_size > 0

    again = _batch(tmp_path / "a", tmp_path / "home_a")
    assert again.returncode == 0 and again.stdout.count("[skip]") == 6 and "[start]" not in again.stdout

    # kill -9 mid-notebook (the cache is warm, so the run is quick): the rerun stops the orphaned notebook,
    # and its records are those of an uninterrupted run
    killed = _batch(tmp_path / "c", tmp_path / "home_a", wait=False)
    deadline = time.monotonic() + 300
    while not (tmp_path / "c" / "notebooks" / "01_dataset.ipynb").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    killed.kill()
    killed.wait()
    orphans = json.loads((tmp_path / "c" / "run.lock").read_text())["groups"]
    rerun = _batch(tmp_path / "c", tmp_path / "home_a")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _numbers(tmp_path / "c" / "records") == a
    for pgid in orphans:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
