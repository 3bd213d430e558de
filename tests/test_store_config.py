"""The artifact store (atomic, cached, self-checking) and the config system."""
import concurrent.futures
import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from hyperclip_lib.config import WORLD_V2, get_config, parse_overrides, with_overrides
from hyperclip_lib.store import ArtifactStore, atomic_write_json


def writer(calls, text="hello"):
    def build(folder):
        calls.append(folder)
        (folder / "out.txt").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "x.bin").write_bytes(b"\x00\x01")
    return build


def test_ensure_builds_once_and_reuses(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    p1 = store.ensure("stage", {"a": 1}, writer(calls))
    p2 = store.ensure("stage", {"a": 1}, writer(calls))
    assert p1 == p2 and len(calls) == 1 and (p1 / "out.txt").read_text() == "hello"
    p3 = store.ensure("stage", {"a": 2}, writer(calls))
    assert p3 != p1 and len(calls) == 2


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)

    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.ensure("stage", {"a": 1}, broken)
    assert list((tmp_path / "stage").iterdir()) == []


def test_a_killed_builders_half_written_folder_is_cleared_by_the_next_build(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    path = store.path("stage", {"a": 1})
    stale = path.parent / f".{path.name}.building.dead1234"     # what kill -9 mid-build leaves
    stale.mkdir(parents=True)
    (stale / "half.txt").write_text("half")
    other = path.parent / ".someotherkey.building.alive567"      # another key's build: not ours to touch
    other.mkdir()
    assert store.ensure("stage", {"a": 1}, writer(calls)) == path and len(calls) == 1
    assert not stale.exists() and other.exists()


def _slow_build_in_process(root, log):
    def build(folder):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        (folder / "out.txt").write_text("shared")
    return str(ArtifactStore(root).ensure("stage", {"shared": True}, build))


def test_processes_racing_for_one_artifact_build_it_once(tmp_path):
    log = tmp_path / "builds.log"
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(_slow_build_in_process, [tmp_path / "store"] * 3, [log] * 3))
    assert len(set(paths)) == 1 and (Path(paths[0]) / "out.txt").read_text() == "shared"
    assert log.read_text() == "built\n"


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest", "foreign_config"])
def test_corrupted_or_mismatched_artifacts_are_rebuilt_with_a_warning(tmp_path, damage):
    store, calls = ArtifactStore(tmp_path), []
    path = store.ensure("stage", {"a": 1}, writer(calls))
    manifest = json.loads((path / "manifest.json").read_text())
    if damage == "truncate":
        (path / "sub" / "x.bin").write_bytes(b"\x00")
    elif damage == "delete":
        (path / "out.txt").unlink()
    elif damage == "manifest":
        (path / "manifest.json").write_text("{not json")
    else:
        manifest["config"] = {"a": 2}
        (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="rebuilding"):
        again = store.ensure("stage", {"a": 1}, writer(calls))
    assert again == path and len(calls) == 2
    assert store.verify(again, {"a": 1}) is None and (again / "sub" / "x.bin").read_bytes() == b"\x00\x01"


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"x": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": Unserialisable()})
    assert json.loads(target.read_text()) == {"x": 1} and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_profiles_and_overrides():
    quick, ci, paper = get_config("quick"), get_config("ci"), get_config("paper")
    assert ci.world.n_images < quick.world.n_images and paper.encoder.model == "ViT-L-14-336"
    cfg = with_overrides(quick, parse_overrides(["world.n_images=123", "data.vqa_root=/data/vqa",
                                                 "encoder.pretrained=none", "calibration.lr=0.5"]))
    assert (cfg.world.n_images, cfg.data.vqa_root, cfg.encoder.pretrained, cfg.calibration.lr) == \
        (123, "/data/vqa", None, 0.5)
    assert get_config("ci", {"world.seed": 3}).world.seed == 3
    assert get_config("quick", data__vqa_root="/x").data.vqa_root == "/x"
    # a field that is None now is read as its declared type (`int | None`), and back to None
    steps = with_overrides(quick, parse_overrides(["ldm.sampler_steps=12"])).ldm.sampler_steps
    assert steps == 12 and isinstance(steps, int)
    assert with_overrides(quick, {"base.samples_per_task": "none"}).base.samples_per_task is None
    # ci's scenes and captions are world v2's, whatever the default world, at ci's size
    v2 = with_overrides(quick, WORLD_V2)
    assert dataclasses.replace(ci.world, n_images=v2.world.n_images, max_per_question=v2.world.max_per_question,
                               questions_per_image=v2.world.questions_per_image,
                               availability_power=v2.world.availability_power) == v2.world
    assert (ci.world_clip.caption_style, ci.world_clip.alt_max_kinds) == ("questions", 3)


@pytest.mark.parametrize("overrides, message", [
    ({"world.nope": 1}, "unknown config key 'world.nope'"),
    ({"nosection.x": 1}, "unknown config section 'nosection'"),
    ({"seed": 1}, "unknown config section 'seed'"),
    ({"world.n_images": "many"}, "cannot read 'many' as int"),
    ({"ldm.sampler_steps": "few"}, "ldm.sampler_steps.*cannot read 'few' as int"),
])
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises((KeyError, ValueError), match=message):
        get_config("quick", overrides)
    with pytest.raises(ValueError, match="unknown profile"):
        get_config("huge")


def test_devices_default_to_a_gpu_when_torch_sees_one_and_configs_name_the_one_resolved(monkeypatch):
    import torch
    for profile in ("ci", "quick", "paper"):   # no GPU here
        cfg = get_config(profile)
        assert (cfg.encoder.device, cfg.base.device) == ("cpu", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = get_config("paper")
    assert (cfg.encoder.device, cfg.base.device) == ("cuda", "cuda")
    assert get_config("paper", {"base.device": "cpu"}).base.device == "cpu"   # an explicit device stays
    assert get_config("paper", {"encoder.device": "cuda:1"}).encoder.device == "cuda:1"
