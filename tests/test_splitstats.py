"""Split statistics: exact values on hand-made splits, and the authors' real Meta-VQA split (labels only)."""
import json

import pytest
import torch

from hyperclip_lib.metavqa import PAPER_STATISTICS, Task, TaskSplit, load_meta_vqa
from hyperclip_lib.splitstats import (LABEL_BANDS, MIX_BANDS, authors_split_dir, band_misses, gap_share_interval,
                                      leakage, minilm_embedder, question_kind, question_mix, reference_accuracies,
                                      split_statistics)

AUTHORS = authors_split_dir()


def task(question, support, query):
    answers = tuple(dict.fromkeys(a for _, a in support + query))
    return Task(question, answers, tuple(support), tuple(query))


def toy_split():
    train = (task("What color is the star?", [("i1", "red"), ("i2", "red"), ("i3", "blue")],
                  [("i4", "red"), ("i5", "blue")]),
             task("How many stars?", [("i6", "1"), ("i7", "2")], [("i8", "2"), ("i9", "2")]))
    # 2 of its 4 query pairs sit in the first training task, 1 in the second
    test = (task("What colour is the star?", [("j1", "blue"), ("j2", "blue"), ("j3", "red")],
                 [("i4", "red"), ("i5", "blue"), ("i8", "2"), ("j4", "red")]),)
    return TaskSplit(train, test)


def test_leakage_is_the_best_single_training_task_share_of_the_query_pairs():
    assert leakage(toy_split()) == [0.5]


def test_reference_accuracies_follow_their_rules():
    split = toy_split()
    # train-only embeddings [train..., test...]: the test question is nearest to the colour task
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]), dim=-1)
    acc = reference_accuracies(split, emb, k=1)
    assert acc["chance"] == [pytest.approx(100 / 3)]            # answers blue, red, 2
    assert acc["support majority"] == [25.0]                    # blue: 1 of 4 query samples
    assert acc["global answer prior"] == [50.0]                 # red (3 of 9 training samples) and 2 (3): red first
    assert acc["question-only prior"] == [50.0]                 # the colour task votes red 3/5, blue 2/5


def test_split_statistics_hold_every_row_and_the_gap_share():
    stats = split_statistics(toy_split(), lambda qs: torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]), dim=-1))
    assert stats["leakage: mean best-match coverage (%)"] == 50.0
    assert stats["leakage: test tasks ≥ 50% in one train task (%)"] == 100.0
    assert stats["nearest train question: median cosine"] == pytest.approx(0.9 / (0.82 ** 0.5), rel=1e-5)
    lo, hi = stats["global answer prior (%)"], stats["support majority (%)"]
    assert stats["question-only prior: share of the global → majority gap (%)"] == pytest.approx(
        100 * (stats["question-only prior (%)"] - lo) / (hi - lo))


def test_the_question_mix_follows_its_rule_in_order():
    assert [question_kind(q) for q in ("How many red stars?", "What colour is the star?", "What color is the "
                                       "one how many?", "Where is the boat?", "What is left of the boat?",
                                       "  WHERE is it?", "How many colors?")] == \
        ["count", "colour", "count", "where", "other", "where", "count"]
    mix = question_mix(toy_split())   # train: a colour and a count task; test: one colour task
    assert mix["question mix, meta-train: colour (%)"] == 50 and mix["question mix, meta-train: count (%)"] == 50
    assert mix["question mix, meta-test: colour (%)"] == 100 and mix["question mix, all: other (%)"] == 0
    assert mix["question mix, all: colour (%)"] == pytest.approx(200 / 3)
    assert mix == {k: v for k, v in split_statistics(toy_split()).items() if k.startswith("question mix")}


def test_the_gap_share_interval_is_a_point_for_identical_tasks_and_brackets_the_share_otherwise():
    same = {"question-only prior": [30.0] * 8, "global answer prior": [20.0] * 8, "support majority": [40.0] * 8}
    assert gap_share_interval(same) == pytest.approx((50.0, 50.0))
    varied = {"question-only prior": [30.0, 10.0, 50.0, 30.0] * 5, "global answer prior": [20.0, 20.0, 10.0, 30.0] * 5,
              "support majority": [40.0, 50.0, 30.0, 40.0] * 5}
    low, high = gap_share_interval(varied)
    point = 100 * (30 - 20) / (40 - 20)
    assert low < point < high and high - low > 10


@pytest.fixture(scope="module")
def authors_split():
    if AUTHORS is None:
        pytest.skip("the authors' split (shared/data/metavqa-authors) is not beside this repository")
    return TaskSplit.from_meta(*load_meta_vqa(AUTHORS))


def test_the_authors_split_loads_with_the_papers_statistics_and_a_prompt_per_question(authors_split):
    stats = split_statistics(authors_split)
    for key in ("tasks", "meta-train tasks", "meta-test tasks", "image-answer pairs"):
        assert stats[key] == PAPER_STATISTICS[key]
    for key in ("answers per task (mean)", "support size (mean)", "query size (mean)"):
        assert stats[key] == pytest.approx(PAPER_STATISTICS[key], abs=0.01)
    assert stats["samples per task (median)"] == 42
    prompts = json.loads((AUTHORS / "prompt_meta.json").read_text())
    missing = [t.question for t in authors_split.all_tasks() if t.question not in prompts]
    assert not missing and all(prompts[t.question].count("{}") == 1 for t in authors_split.all_tasks())
    # the label-only measures the README of the split reports (no leak; chance, majority and prior)
    assert stats["leakage: mean best-match coverage (%)"] == pytest.approx(6.6, abs=0.1)
    assert stats["leakage: test tasks ≥ 50% in one train task (%)"] == pytest.approx(100 / 373)
    assert stats["chance (%)"] == pytest.approx(16.1, abs=0.05)
    assert stats["global answer prior (%)"] == pytest.approx(24.4, abs=0.05)
    assert stats["support majority (%)"] == pytest.approx(33.8, abs=0.2)
    # the real benchmark's question mix: a quarter count, a quarter colour, 5% where
    mix = [stats[f"question mix, all: {kind} (%)"] for kind in ("count", "colour", "where", "other")]
    assert mix == pytest.approx([25.34, 25.18, 5.07, 44.41], abs=0.01)


def test_the_question_only_prior_on_the_authors_split(authors_split):
    stats = split_statistics(authors_split, minilm_embedder())
    assert stats["question-only prior (%)"] == pytest.approx(27.8, abs=0.1)
    assert stats["question-only prior: share of the global → majority gap (%)"] == pytest.approx(36, abs=1)
    # ~9 points of gap over 373 tasks: the share is known to about ±10 points
    assert 20 < stats["question-only prior: gap share, 95% interval over test tasks (low)"] < 36
    assert 36 < stats["question-only prior: gap share, 95% interval over test tasks (high)"] < 52
    assert stats["nearest train question: median cosine"] == pytest.approx(0.90, abs=0.005)
    assert stats["nearest train question: share > 0.95 (%)"] == pytest.approx(29, abs=1)
    assert not band_misses(stats, {**LABEL_BANDS, **MIX_BANDS}), "the real split is what the bands were measured on"


def test_band_misses_names_each_statistic_outside_its_band_or_not_measured():
    bands = {"a": (1, 2), "b": (None, 5), "c": (0, None), "d": (0, 1)}
    misses = band_misses({"a": 2.5, "b": 5.0, "c": -1.0}, bands)
    assert misses == ["a: 2.50 outside [1, 2]", "c: -1.00 outside [0, ]", "d: not measured outside [0, 1]"]
    assert band_misses({"a": 1.0, "b": -3.0, "c": 0.0, "d": 1.0}, bands) == []
