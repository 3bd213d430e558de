"""The baseline stage on the `ci` benchmark: records, caching, seeds, descriptor shares, tables."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

from hyperclip_lib.config import get_config, with_overrides
from hyperclip_lib.features import FeatureMismatchError
from hyperclip_lib.metavqa import load_meta_vqa, write_meta_vqa
from hyperclip_lib.plots import baseline_curves
from hyperclip_lib.records import floor_and_ceiling, load_records, save_record, summary_table, table1, table4
from hyperclip_lib.stages import common
from hyperclip_lib.stages.baselines import run_baseline, run_baselines, training_pool
from hyperclip_lib.stages.data import ensure_data, prepare, validation_tasks
from hyperclip_lib.store import ArtifactStore
from hyperclip_lib.world import generate_world


@pytest.fixture(scope="module")
def ci():
    cfg = get_config("ci")
    prepared = prepare(cfg)
    return cfg, prepared["data"], prepared["features"]


def test_a_run_is_a_complete_record_cached_and_repeatable(ci, tmp_path):
    cfg, data, features = ci
    store = ArtifactStore(tmp_path / "a")
    first = run_baseline(cfg, "Uncond. MNet-MAML", data, features, store)
    rec = first.record
    assert rec["method"] == "Uncond. MNet-MAML" and rec["profile"] == "ci" and rec["seed"] == 0
    assert len(rec["per_task"]) == len(data.split.test)
    assert rec["kind"] == "baseline" and rec["details"]["optimizer_steps"] == cfg.mnet_maml.epochs * -(-len(data.split.train) // cfg.base.meta_batch)
    for metric in ("zero_shot", "few_shot"):
        assert 0 < rec[metric]["task_mean"] < 100 and 0 < rec[metric]["sample_weighted"] < 100
    assert {"torch", "python"} <= set(rec["versions"]) and len(rec["config_hash"]) == 16
    # The cache serves the same run without training again...
    again = run_baseline(cfg, "Uncond. MNet-MAML", data, features, store)
    assert again.record == rec
    assert len(list((tmp_path / "a" / "baseline").iterdir())) == 1
    # ...a fresh store retrains to the same numbers, and another seed gives other ones.
    fresh = run_baseline(cfg, "Uncond. MNet-MAML", data, features, ArtifactStore(tmp_path / "b")).record
    assert fresh["per_task"] == rec["per_task"]
    other = run_baseline(with_overrides(cfg, {"base.seed": 1}), "Uncond. MNet-MAML", data, features, store).record
    assert other["per_task"] != rec["per_task"]


def test_half_the_descriptors_halves_what_conditional_methods_train_on(ci, tmp_path):
    cfg, data, features = ci
    half = with_overrides(cfg, {"base.descriptor_fraction": 0.5})
    n = len(data.split.train)
    assert len(training_pool(half, "Cond. Multitask", n)) == round(n / 2)
    assert len(training_pool(half, "Uncond. Multitask", n)) == n
    store = ArtifactStore(tmp_path)
    rec = run_baseline(half, "Cond. Multitask FiLM", data, features, store).record
    assert rec["details"]["training_tasks"] == round(n / 2) and rec["descriptor_fraction"] == 0.5
    # Unconditional methods never read descriptors: one cached model serves every share.
    run_baseline(cfg, "Uncond. Multitask", data, features, store)
    run_baseline(half, "Uncond. Multitask", data, features, store)
    assert len(list((tmp_path / "baseline").iterdir())) == 2


def test_records_round_trip_and_tables_show_mean_and_spread(ci, tmp_path):
    cfg, data, features = ci
    results = run_baselines(cfg, data, features, methods=["CLIP as base model", "Uncond. Multitask"],
                            seeds=[0, 1], results_dir=tmp_path / "records", store=ArtifactStore(tmp_path / "s"))
    records = load_records(tmp_path / "records")
    assert len(records) == 4 and sorted(json.dumps(r, sort_keys=True) for r in records) == \
        sorted(json.dumps(r.record, sort_keys=True) for r in results)
    table = summary_table(records)
    multitask = [r["zero_shot"]["task_mean"] for r in records if r["method"] == "Uncond. Multitask"]
    row = table[table["method"] == "Uncond. Multitask"].iloc[0]
    assert row["mean"] == pytest.approx(sum(multitask) / 2) and row["seeds"] == 2
    assert row["std"] == pytest.approx(abs(multitask[0] - multitask[1]) / 2 ** 0.5)
    floor, ceiling = floor_and_ceiling(records)
    clip = [r["zero_shot"]["task_mean"] for r in records if r["method"] == "CLIP as base model"]
    assert floor == pytest.approx(sum(clip) / 2)
    assert ceiling == pytest.approx(max(summary_table(records, "few_shot")["mean"]))
    assert list(table1(records)["method"]) == ["CLIP as base model", "Uncond. Multitask"]
    assert table1(records).loc[0, "paper 100%"] == 44.99 and table4(records).loc[1, "paper"] == 55.53
    save_record(records[0], tmp_path / "records")   # same name: replaced, not duplicated
    assert len(load_records(tmp_path / "records")) == 4


def test_unknown_methods_are_named():
    with pytest.raises(KeyError, match="unknown method 'MAML\\+\\+'.*Cond. HNet-MAML"):
        training_pool(get_config("ci"), "MAML++", 10)


def test_a_new_stage_version_rebuilds_instead_of_reusing(ci, tmp_path, monkeypatch):
    """Cache keys carry a version of each stage's code, nested into every key built on it."""
    cfg, data, features = ci
    store = ArtifactStore(tmp_path)
    run_baseline(cfg, "CLIP as base model", data, features, store)
    run_baseline(cfg, "CLIP as base model", data, features, store)
    assert len(list((tmp_path / "baseline").iterdir())) == 1
    monkeypatch.setitem(common.STAGE_VERSIONS, "features", common.STAGE_VERSIONS["features"] + 1)
    run_baseline(cfg, "CLIP as base model", data, features, store)   # an upstream stage changed: rebuilt
    assert len(list((tmp_path / "baseline").iterdir())) == 2
    monkeypatch.setitem(common.STAGE_VERSIONS, "baseline", common.STAGE_VERSIONS["baseline"] + 1)
    run_baseline(cfg, "CLIP as base model", data, features, store)
    assert len(list((tmp_path / "baseline").iterdir())) == 3


def test_foreign_features_are_refused_by_name_or_kept_apart_in_the_cache(ci, tmp_path):
    cfg, data, features = ci
    store = ArtifactStore(tmp_path)
    narrow = dataclasses.replace(features, image_features=features.image_features[:, :128],
                                 question_embeddings=features.question_embeddings[:, :128])
    with pytest.raises(FeatureMismatchError, match="dimension 128.*expects dimension 256"):
        run_baseline(cfg, "CLIP as base model", data, narrow, store)
    other_kind = dataclasses.replace(features, encoder={**features.encoder, "name": "open_clip:RN50:openai"})
    with pytest.raises(FeatureMismatchError, match="open_clip:RN50"):
        run_baseline(cfg, "CLIP as base model", data, other_kind, store)
    # same width, same kind, another world CLIP: its own cache entry, never the first one's results
    other = dataclasses.replace(features, encoder={**features.encoder, "config_hash": "0123456789abcdef"})
    run_baseline(cfg, "CLIP as base model", data, features, store)
    run_baseline(cfg, "CLIP as base model", data, other, store)
    assert len(list((tmp_path / "baseline").iterdir())) == 2


def test_data_keys_follow_the_content_of_the_files_read(tmp_path):
    world = get_config("ci", {"world.n_images": 150, "world.max_per_question": 200}).world
    generate_world(world, tmp_path / "vqa")
    cfg = get_config("ci", {"data.vqa_root": str(tmp_path / "vqa")})
    store = ArtifactStore(tmp_path / "artifacts")
    first = ensure_data(cfg, store)
    annotations = tmp_path / "vqa" / "Annotations" / "v2_mscoco_train2014_annotations.json"
    stat = annotations.stat()
    text = annotations.read_text()
    edited = text.replace('"multiple_choice_answer": "red"', '"multiple_choice_answer": "tan"', 1)
    assert edited != text and len(edited) == len(text)
    annotations.write_text(edited)   # same size, and the old time put back: only the content tells
    os.utime(annotations, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = ensure_data(cfg, store)
    assert second.source != first.source
    prompts = tmp_path / "vqa" / "Annotations" / "prompt_meta.json"
    prompts.write_text(prompts.read_text().replace("{}", "{} ", 1))
    assert ensure_data(cfg, store).source != second.source
    # a released split (meta_dir): editing meta_test.json in place changes the key too
    meta = tmp_path / "meta"
    write_meta_vqa(*load_meta_vqa(store.root / "metavqa" / second.source["metavqa"]), meta)
    released = get_config("ci", {"data.vqa_root": str(tmp_path / "vqa"), "data.meta_dir": str(meta)})
    before = ensure_data(released, store).source
    split = json.loads((meta / "meta_test.json").read_text())
    (meta / "meta_test.json").write_text(json.dumps(dict(list(split.items())[:1])))
    after = ensure_data(released, store)
    assert after.source != before and len(after.split.test) == 1


def test_meta_validation_tasks_are_held_out_of_training_and_choose_the_schedule(ci, tmp_path):
    cfg, _, _ = ci
    held = with_overrides(cfg, {"data.validation_fraction": 0.25, "data.validation_seed": 3})
    store = ArtifactStore(tmp_path)
    prepared = prepare(held, store)
    data, features = prepared["data"], prepared["features"]
    n = len(data.split.train)
    assert len(data.validation) == round(n / 4) and data.validation == tuple(sorted(set(data.validation)))
    assert {t.question for t in data.train_tasks} | {t.question for t in data.validation_tasks} == \
        {t.question for t in data.split.train}
    assert not {t.question for t in data.train_tasks} & {t.question for t in data.validation_tasks}
    assert data.validation == validation_tasks(n, 0.25, 3) != validation_tasks(n, 0.25, 4)
    assert ensure_data(cfg, store).validation == () and "validation" not in ensure_data(cfg, store).source
    result = run_baseline(held, "Uncond. Multitask", data, features, store)
    rec = result.record
    assert rec["details"]["training_tasks"] == n - len(data.validation)
    assert len(baseline_curves([result], 40.0).axes) == 3   # the validation curve gets its panel
    assert rec["details"]["selected_on"] == "zero_shot" and rec["details"]["validation_tasks"] == len(data.validation)
    assert 0 <= rec["details"]["chosen_step"] <= rec["details"]["optimizer_steps"]
    with pytest.raises(ValueError, match="data.validation_fraction"):
        validation_tasks(10, 1.0, 0)
