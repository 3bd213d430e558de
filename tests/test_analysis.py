"""The analysis over records: paired comparisons, the claims' sanity row, the per-family table."""
import pytest

from hyperclip_lib.analysis import compare, family_table, paper_claims
from hyperclip_lib.records import stage_times


def record(method, seed, accuracies, share=1.0, few=None, kind="baseline"):
    questions = ["What color is the star?", "What is the red object?", "How many stars are there?"]
    per_task = {q: {"zero_shot": a, "n_query": 10} for q, a in zip(questions, accuracies)}
    mean = sum(accuracies) / len(accuracies)
    r = {"kind": kind, "method": method, "profile": "ci", "seed": seed, "descriptor_fraction": share,
         "zero_shot": {"task_mean": mean, "sample_weighted": mean}, "per_task": per_task}
    if few is not None:
        r["few_shot"] = {"task_mean": few, "sample_weighted": few}
    return r


def test_a_constant_paired_difference_has_a_point_interval():
    records = [record("A", s, [50 + s, 60, 70]) for s in (0, 1)] + [record("B", s, [48 + s, 58, 68]) for s in (0, 1)]
    result = compare(records, "A", "B")
    assert result.diff == pytest.approx(2.0) and result.low == pytest.approx(2.0) and result.high == pytest.approx(2.0)
    assert result.verdict == "yes" and (result.seeds, result.tasks) == (2, 3)
    assert compare(records, "B", "A").verdict == "no" and compare(records, "A", "C") is None


def test_differences_of_both_signs_are_within_noise_and_the_interval_covers_the_mean():
    records = [record("A", s, [50, 60, 70]) for s in (0, 1, 2)]
    records += [record("B", s, [55, 55, 70 + (s - 1)]) for s in (0, 1, 2)]
    result = compare(records, "A", "B", n_boot=4000)
    assert result.verdict == "within noise" and result.low < result.diff < result.high
    assert result.diff == pytest.approx(0.0)


def test_the_sanity_claim_catches_a_zero_shot_method_above_the_few_shot_ceiling():
    records = [record("CLIP as base model", 0, [40, 40, 40], few=60), record("Cond. Multitask", 0, [90, 90, 90], few=95),
               record("Uncond. Multitask", 0, [50, 50, 50], few=70)]
    claims = paper_claims(records).set_index("claim")["holds"]
    sanity = next(c for c in claims.index if c.startswith("no zero-shot method reaches the few-shot ceiling"))
    assert claims[sanity] == "yes"
    records[1]["zero_shot"]["task_mean"] = 99.0   # a zero-shot method above every few-shot result
    claims = paper_claims(records).set_index("claim")["holds"]
    assert claims[sanity] == "no"


def test_accuracy_by_question_family():
    records = [record("CLIP as base model", s, [40, 50, 60]) for s in (0, 1)]
    table = family_table(records)
    assert table.loc["CLIP as base model", "color"] == 40 and table.loc["CLIP as base model", "count"] == 60
    assert table.loc["CLIP as base model", "shape"] == 50
    assert table.loc["tasks"].sum() == 3


def test_stage_times_count_each_artifact_once():
    rows = [{"kind": "hyperldm", "config_hash": "s1", "timings": {"train_s": 60, "sample_s": 30}},   # γ=0 ...
            {"kind": "hyperldm", "config_hash": "s1", "timings": {"train_s": 60, "sample_s": 30}},   # ... γ=1: same
            {"kind": "hyperldm", "config_hash": "s2", "timings": {"train_s": 120, "sample_s": 90}},
            {"kind": "baseline", "config_hash": "b1", "timings": {"wall_s": 600}}]
    table = stage_times(rows).set_index(["stage", "timing"])
    assert table.loc[("hyperldm", "train_s"), "minutes"] == 3.0 and table.loc[("hyperldm", "sample_s"), "minutes"] == 2.0
    assert table.loc[("hyperldm", "train_s"), "artifacts"] == 2 and table.loc[("baseline", "wall_s"), "minutes"] == 10.0


def test_baseline_band_statistics_are_the_differences_the_bands_name():
    from hyperclip_lib.records import BASELINE_BANDS, baseline_statistics
    from hyperclip_lib.splitstats import band_misses
    records = []
    for s in (0, 1):
        records += [record("CLIP as base model", s, [40, 40, 40], few=50),
                    record("Uncond. Multitask", s, [44 + 2 * s] * 3, few=52),     # mean 45 over the seeds
                    record("Uncond. MNet-MAML", s, [43, 43, 43], few=56 + s),    # best few-shot: 56.5
                    record("Cond. Multitask", s, [44.8, 44.8, 44.8], few=50),
                    record("Cond. Multitask", s, [30, 30, 30], share=0.5, few=40),   # not a 100% row: not read
                    record("Cond. HNet-MAML", s, [39, 39, 39], few=45)]
    stats = baseline_statistics(records, support_majority=33.0)
    assert stats["floor − support majority"] == pytest.approx(7.0)
    assert stats["domain gap: best unconditional zero-shot − floor"] == pytest.approx(5.0)
    assert stats["task window: best few-shot − best unconditional zero-shot"] == pytest.approx(11.5)
    assert stats["best few-shot − floor"] == pytest.approx(16.5)
    assert stats["Cond. Multitask − Uncond. Multitask, zero-shot"] == pytest.approx(-0.2)
    assert stats["lowest baseline zero-shot − floor"] == pytest.approx(-1.0)
    assert stats["a MAML row is best few-shot (1 = yes)"] == 1.0
    missed = band_misses(stats, BASELINE_BANDS)
    assert [m.split(":")[0] for m in missed] == ["task window", "lowest baseline zero-shot − floor"]
