"""The reproducibility contract (numerics.py): pinned threads and CPU code paths, what keys and records carry, and
the shipped world CLIP that the training code reproduces exactly."""
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperclip_lib import numerics
from hyperclip_lib.config import get_config
from hyperclip_lib.stages import data as data_stage
from hyperclip_lib.stages.common import stage_key
from hyperclip_lib.store import ArtifactError, ArtifactStore, config_hash

REPO = Path(__file__).resolve().parent.parent
# The shipped world CLIPs were trained on an AMD EPYC (Zen 4), where retraining reproduces them bit for bit, as on
# a Zen 3 with AVX2 alone (2026-12-02). On an Intel Xeon (2026-12-02) the pinned paths gave other ci weights
# (model.pt 35c7de3c… against 8001c2e1…): the contract holds across the AMD machines measured, not across CPU
# vendors (docs/architecture.md).
SHIPPED_ON_VENDOR = "AuthenticAMD"


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id ('AuthenticAMD', 'GenuineIntel'), or platform.processor() without it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")),
                platform.processor())


PINNED = {"threads": 1, "cpu_capability": "AVX2", "mkl_cbwr": "COMPATIBLE", "onednn": False}


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**clean, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **env})


@pytest.fixture
def one_thread():
    """This process under the profiles' settings for the test, its own thread count back afterwards."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    yield numerics.apply(1)
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn


def test_importing_the_library_pins_the_cpu_paths_in_a_fresh_process():
    done = _python("import hyperclip_lib, json; from hyperclip_lib import numerics; "
                   "print(json.dumps(numerics.apply(1)))", OMP_NUM_THREADS="2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == PINNED


def test_a_torch_kernel_run_before_the_library_is_named_instead_of_computing_unpinned():
    done = _python("import torch; torch.ones(64, 64) @ torch.ones(64, 64); "
                   "from hyperclip_lib import numerics; numerics.apply(1)")
    assert done.returncode != 0
    assert "a torch computation ran before hyperclip_lib was imported" in done.stderr
    assert "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE" in done.stderr


def test_apply_names_a_bad_thread_count():
    with pytest.raises(ValueError, match="compute.threads: expected 1 or more, got 0"):
        numerics.apply(0)


def test_keys_of_numeric_stages_carry_the_settings_and_records_read_them_per_stage(one_thread):
    assert one_thread == PINNED
    inner = stage_key("features", data="d")
    outer = stage_key("baseline", features=inner, method="m")
    assert inner["numerics"] == outer["numerics"] == PINNED
    assert "numerics" not in stage_key("world", world={}) and "numerics" not in stage_key("metavqa", source={})
    assert numerics.of_key(outer, device="cpu") == {"baseline": {**PINNED, "device": "cpu"}, "features": PINNED}
    on_gpu = stage_key("features", data="d", device="cuda")   # a key that names its device reports it
    assert numerics.of_key({"stage": "x", "numerics": PINNED, "f": on_gpu})["features"]["device"] == "cuda"
    torch.set_num_threads(2)   # another thread count is another artifact
    assert config_hash(stage_key("features", data="d")) != config_hash(inner)


def test_the_shipped_world_clips_are_found_and_checked(one_thread, tmp_path, monkeypatch):
    for profile in ("ci", "quick"):
        path = data_stage.shipped_world_clip(get_config(profile))
        assert path is not None and (path / "model.pt").stat().st_size < 8 << 20
    cfg = get_config("ci")
    store = ArtifactStore(tmp_path / "home")
    copied = data_stage.ensure_world_clip(cfg, store)   # copied, not trained: the same bytes
    shipped = data_stage.shipped_world_clip(cfg)
    assert (copied / "model.pt").read_bytes() == (shipped / "model.pt").read_bytes()
    assert data_stage.shipped_world_clip(get_config("ci", {"world_clip.steps": 21})) is None   # none for that key

    tampered = tmp_path / "assets"
    shutil.copytree(data_stage.SHIPPED / "world_clip" / shipped.name, tampered / "world_clip" / shipped.name)
    with open(tampered / "world_clip" / shipped.name / "model.pt", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\0" if f.read(1) != b"\0" else b"\1")
    monkeypatch.setattr(data_stage, "SHIPPED", tampered)
    with pytest.raises(ArtifactError, match="shipped world CLIP: .*model.pt does not match its checksum"):
        data_stage.ensure_world_clip(cfg, ArtifactStore(tmp_path / "home2"))


def test_the_training_code_reproduces_the_shipped_ci_world_clip_exactly(tmp_path):
    """`hyperclip train-world-clip --profile ci` on this machine gives the shipped ci-size weights bit for bit:
    the same code and settings that trained the shipped quick one still do what they did."""
    done = subprocess.run([sys.executable, "-m", "hyperclip_lib.cli", "train-world-clip", "--profile", "ci",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    trained = next((tmp_path / "world_clip").iterdir())
    shipped = data_stage.SHIPPED / "world_clip" / trained.name
    assert shipped.exists(), f"no shipped ci world CLIP under the key {trained.name}: the key changed"
    ours = json.loads((trained / "manifest.json").read_text())["files"]["model.pt"]["sha256"]
    theirs = json.loads((shipped / "manifest.json").read_text())["files"]["model.pt"]["sha256"]
    if ours != theirs and cpu_vendor() != SHIPPED_ON_VENDOR:
        pytest.skip(f"retrained on a {cpu_vendor()} CPU the ci world CLIP is {ours[:8]}…, not the shipped {theirs[:8]}… "
                    f"trained on {SHIPPED_ON_VENDOR}: bit-exactness across CPU vendors is a known gap")
    assert ours == theirs
