"""The baseline stage on the `ci` benchmark: records, caching, seeds, descriptor shares, tables."""
from __future__ import annotations

import json

import pytest

from hyperclip_lib.config import get_config, with_overrides
from hyperclip_lib.records import floor_and_ceiling, load_records, save_record, summary_table, table1, table4
from hyperclip_lib.stages import common
from hyperclip_lib.stages.baselines import run_baseline, run_baselines, training_pool
from hyperclip_lib.stages.data import prepare
from hyperclip_lib.store import ArtifactStore


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
