"""The real-scale rehearsal (rehearsal.py): its stand-in inputs, its record check, and a small run end to end."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperclip_lib.features import FeatureFile
from hyperclip_lib.rehearsal import STANDIN_MODEL, check_records, prepare, standin_vector
from hyperclip_lib.splitstats import authors_split_dir

REPO = Path(__file__).resolve().parent.parent
AUTHORS = authors_split_dir()
needs_split = pytest.mark.skipif(AUTHORS is None, reason="the authors' split is not beside this repository")


def test_stand_in_vectors_are_unit_vectors_fixed_by_their_text():
    a, b = standin_vector("COCO_train2014_000000000009", 768), standin_vector("COCO_train2014_000000000025", 768)
    assert torch.equal(a, standin_vector("COCO_train2014_000000000009", 768))
    assert a.norm().item() == pytest.approx(1.0) and abs(a @ b) < 0.2


@needs_split
def test_the_inputs_hold_the_real_questions_templates_and_a_feature_per_image(tmp_path):
    overrides = prepare(tmp_path, AUTHORS, tasks=20)
    meta_train = json.loads((tmp_path / "meta" / "meta_train.json").read_text())
    meta_test = json.loads((tmp_path / "meta" / "meta_test.json").read_text())
    assert len(meta_train) == 20 and len(meta_test) == 6
    assert (tmp_path / "vqa" / "Annotations" / "prompt_meta.json").read_bytes() == (AUTHORS / "prompt_meta.json").read_bytes()
    images = list(dict.fromkeys(i for t in {**meta_train, **meta_test}.values() for i, _ in t["train"] + t["test"]))
    file = FeatureFile.load(overrides["data.image_features"], encoder=f"open_clip:{STANDIN_MODEL}:standin", dim=768,
                            images=images)
    assert torch.equal(file.images(images[:1])[0], standin_vector(images[0], 768))
    question = next(iter(meta_test))
    assert file.text_lookup([question]) is not None


def test_a_malformed_record_is_named():
    good = {"kind": "baseline", "method": "m", "seed": 0, "zero_shot": {"task_mean": 40.0}, "per_task": {"q": {}},
            "compute": {}, "versions": {}, "config_hash": "x"}
    assert check_records([good], 1) == []
    assert check_records([good], 2) == ["m seed 0: 1 meta-test tasks scored, expected 2"]
    assert check_records([{**good, "zero_shot": {"task_mean": float("nan")}}], 1) == ["m seed 0: zero-shot task mean nan"]


@needs_split
def test_a_small_rehearsal_runs_every_notebook_and_reports_time_and_memory(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hyperclip_lib.cli", "rehearse-real", "--profile", "ci",
                           "--tasks", "24", "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=REPO,
                          env={**{k: v for k, v in os.environ.items() if k != "HYPERCLIP_HOME"},
                               "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for notebook in ("01_dataset", "02_baselines", "03_generators", "04_hyperclip", "05_hyperldm", "06_analysis"):
        assert re.search(rf"^{notebook}\s+done\s+[\d.]+\s+\d{{3,}}$", done.stdout, re.M), notebook   # minutes, MiB
    assert "time per stage (minutes)" in done.stdout and "records: every one well-formed" in done.stdout
    assert (tmp_path / "r" / "artifacts" / "features").exists()   # its own store, not the workbook's


@needs_split
def test_the_gpu_check_runs_on_a_cpu_at_ci_size_and_writes_every_stage(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--profile", "ci", "--tasks",
                           "24", "--device", "cpu", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check_cpu_ci.json").read_text())
    stages = [r["stage"] for r in result["stages"]]
    assert len([s for s in stages if s.startswith("baseline: ")]) == 8
    assert {"HVAE", "CLIP_H + guidance (HVAE)", "HyperLDM training (HVAE)", "HyperLDM sampling: ddpm",
            "HyperLDM sampling: sde-dpmsolver++"} <= set(stages)
    assert all(r["seconds"] >= 0 and r["peak_gib"] > 0 for r in result["stages"])
    assert (tmp_path / "gpu_check_cpu_ci.txt").read_text().count("\n") == len(stages) + 2
