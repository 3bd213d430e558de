"""Label-only statistics of a Meta-VQA split, to hold a benchmark (the Shapes world) against the real one.

Every measure reads only questions, image names and answers, so it runs on the authors' released split
(no images) as on any world:

* **leakage** — per meta-test task, the largest share of its query (image, answer) pairs found in ONE
  meta-train task (support or query); the mean over test tasks, and the share of tasks at ≥ 50%;
* **reference accuracies** on the meta-test query sets (task means, %): chance (uniform over the task's
  answers), the support-set majority, the global answer prior (the task's candidate answer seen most often in
  all meta-train data), and a **question-only prior** — the k nearest meta-train questions by cosine of their
  text embeddings vote for the task's candidate answers with their answer frequencies (each neighbour's share
  of samples with that answer), weighted by the cosine; ties and empty votes fall back on the global prior.
  Its *gap share* is (text prior − global prior) / (support majority − global prior), with a bootstrap 95%
  interval over test tasks;
* **nearest question** — the cosine of each test question to its nearest meta-train question (median, share
  > 0.95);
* **question mix** — the share of tasks (meta-train, meta-test, all) of each kind by one string rule that
  applies to any split (`question_kind`): count, colour, where, other;
* the paper's A.4 shape statistics: tasks, answers per task, support/query sizes, samples-per-task quantiles.
"""
from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import torch

from .encoders import minilm_path
from .metavqa import TaskSplit, statistics_table

AUTHORS_SPLIT = Path("shared") / "data" / "metavqa-authors"
TEXT_PRIOR_NEIGHBOURS = 10
LEAK_THRESHOLD = 0.5
NEAR_DUPLICATE = 0.95


QUESTION_KINDS = ("count", "colour", "where", "other")


def question_kind(question: str) -> str:
    """'count' if the question contains "how many", else 'colour' if it contains "color" or "colour", else
    'where' if it starts with "where", else 'other' (case-insensitive)."""
    q = question.lower().strip()
    if "how many" in q:
        return "count"
    if "color" in q or "colour" in q:
        return "colour"
    return "where" if q.startswith("where") else "other"


def question_mix(split: TaskSplit) -> dict[str, float]:
    """Share of tasks (%) of each `question_kind`, in meta-train, meta-test and all tasks."""
    out = {}
    for part, tasks in (("meta-train", split.train), ("meta-test", split.test), ("all", split.all_tasks())):
        kinds = Counter(question_kind(t.question) for t in tasks)
        out.update({f"question mix, {part}: {kind} (%)": 100 * kinds[kind] / max(1, len(tasks))
                    for kind in QUESTION_KINDS})
    return out


def leakage(split: TaskSplit) -> list[float]:
    """Per meta-test task: the largest share of its query pairs that one meta-train task also holds."""
    holders = defaultdict(set)   # (image, answer) -> meta-train tasks holding it
    for i, task in enumerate(split.train):
        for pair in task.support + task.query:
            holders[pair].add(i)
    shares = []
    for task in split.test:
        counts = Counter(i for pair in task.query for i in holders.get(pair, ()))
        shares.append(max(counts.values(), default=0) / max(1, len(task.query)))
    return shares


def _accuracy(query: tuple, answer: str) -> float:
    return 100 * sum(a == answer for _, a in query) / max(1, len(query))


def _best(scores: dict[str, float], fallback: list[str]) -> str:
    """The highest-scoring answer; ties broken by the order of `fallback` (most frequent globally first)."""
    rank = {a: i for i, a in enumerate(fallback)}
    return max(scores, key=lambda a: (scores[a], -rank.get(a, len(rank))))


def reference_accuracies(split: TaskSplit, question_embeddings: torch.Tensor | None,
                         k: int = TEXT_PRIOR_NEIGHBOURS) -> dict[str, list[float]]:
    """Per meta-test task, the query accuracy (%) of chance, the support majority, the global answer prior
    and (given embeddings of [train questions..., test questions...], L2-normalised) the question-only prior."""
    global_counts = Counter(a for t in split.train for _, a in t.support + t.query)
    out: dict[str, list[float]] = {"chance": [], "support majority": [], "global answer prior": []}
    if question_embeddings is not None:
        out["question-only prior"] = []
        train_emb, test_emb = question_embeddings[:len(split.train)], question_embeddings[len(split.train):]
        sim = test_emb @ train_emb.T
        top = sim.topk(min(k, len(split.train)), dim=1)
        frequencies = [Counter(a for _, a in t.support + t.query) for t in split.train]
        sizes = [len(t.support) + len(t.query) for t in split.train]
    for i, task in enumerate(split.test):
        by_global = sorted(task.answers, key=lambda a: -global_counts[a])
        out["chance"].append(100 / len(task.answers))
        support = Counter(a for _, a in task.support)
        out["support majority"].append(_accuracy(task.query, _best(dict(support), by_global)))
        out["global answer prior"].append(_accuracy(task.query, by_global[0]))
        if question_embeddings is not None:
            votes = {a: 0.0 for a in task.answers}
            for s, j in zip(top.values[i].tolist(), top.indices[i].tolist()):
                for a in task.answers:
                    votes[a] += s * frequencies[j][a] / sizes[j]
            out["question-only prior"].append(_accuracy(task.query, _best(votes, by_global)))
    return out


def split_statistics(split: TaskSplit, embed: Callable[[list[str]], torch.Tensor] | None = None,
                     k: int = TEXT_PRIOR_NEIGHBOURS) -> dict[str, float]:
    """Every statistic of the module docstring for one split; `embed(questions)` gives L2-normalised text
    embeddings (None: the text-based rows are left out)."""
    stats: dict[str, float] = dict(statistics_table(split))
    sizes = sorted(len(t.support) + len(t.query) for t in split.all_tasks())
    median = statistics.median(sizes)
    stats.update({"samples per task (10% quantile)": sizes[len(sizes) // 10],
                  "samples per task (90% quantile)": sizes[(9 * len(sizes)) // 10],
                  "samples per task (max / median)": sizes[-1] / median})
    stats.update(question_mix(split))
    shares = leakage(split)
    stats["leakage: mean best-match coverage (%)"] = 100 * statistics.fmean(shares)
    stats[f"leakage: test tasks ≥ {LEAK_THRESHOLD:.0%} in one train task (%)"] = \
        100 * sum(s >= LEAK_THRESHOLD for s in shares) / len(shares)
    embeddings = None
    if embed is not None:
        questions = [t.question for t in split.train] + [t.question for t in split.test]
        embeddings = embed(questions)
        nearest = (embeddings[len(split.train):] @ embeddings[:len(split.train)].T).max(dim=1).values
        stats["nearest train question: median cosine"] = nearest.median().item()
        stats[f"nearest train question: share > {NEAR_DUPLICATE} (%)"] = \
            100 * (nearest > NEAR_DUPLICATE).float().mean().item()
    accuracies = reference_accuracies(split, embeddings, k)
    for name, accs in accuracies.items():
        stats[f"{name} (%)"] = statistics.fmean(accs)
    if embeddings is not None:
        lo, hi = stats["global answer prior (%)"], stats["support majority (%)"]
        stats["question-only prior: share of the global → majority gap (%)"] = \
            100 * (stats["question-only prior (%)"] - lo) / (hi - lo)
        low, high = gap_share_interval(accuracies)
        stats["question-only prior: gap share, 95% interval over test tasks (low)"] = low
        stats["question-only prior: gap share, 95% interval over test tasks (high)"] = high
    return stats


# The label bands a Shapes world must meet (low, high; None: open), measured on the authors' split
# (docs/world-v2-calibration.md); `tests/test_world.py` asserts them on the default `quick` world.
LABEL_BANDS: dict[str, tuple[float | None, float | None]] = {
    f"leakage: test tasks ≥ {LEAK_THRESHOLD:.0%} in one train task (%)": (None, 2),
    "leakage: mean best-match coverage (%)": (None, 15),
    "question-only prior: share of the global → majority gap (%)": (26, 46),
    "nearest train question: median cosine": (None, 0.93),
    f"nearest train question: share > {NEAR_DUPLICATE} (%)": (None, 40),
    "answers per task (mean)": (7, None),
    "samples per task (median)": (30, 60),
    "samples per task (max / median)": (5, None),
    "tasks": (800, None),
}


# The question mix world v3 must have (issue 23, pre-registered): shares of all tasks by `question_kind`
MIX_BANDS: dict[str, tuple[float | None, float | None]] = {
    "question mix, all: count (%)": (18, 33), "question mix, all: colour (%)": (18, 33),
    "question mix, all: where (%)": (2, 10), "question mix, all: other (%)": (35, 55)}


def band_misses(stats: dict[str, float], bands: dict[str, tuple[float | None, float | None]] = LABEL_BANDS
                ) -> list[str]:
    """The bands `stats` misses, each as 'name: value outside [low, high]' (a statistic not measured misses)."""
    misses = []
    for name, (low, high) in bands.items():
        value = stats.get(name)
        if value is None or (low is not None and value < low) or (high is not None and value > high):
            shown = "not measured" if value is None else f"{value:.2f}"
            misses.append(f"{name}: {shown} outside [{'' if low is None else low}, {'' if high is None else high}]")
    return misses


def gap_share_interval(accuracies: dict[str, list[float]], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap 95% interval of the text prior's gap share over meta-test tasks: a few hundred
    tasks and a gap of a few points make this ratio noisy (±10 points on the real split)."""
    acc = torch.tensor([accuracies[n] for n in ("question-only prior", "global answer prior", "support majority")],
                       dtype=torch.float64)
    idx = torch.randint(acc.shape[1], (resamples, acc.shape[1]), generator=torch.Generator().manual_seed(seed))
    prior, low, high = acc[:, idx].mean(-1)
    shares = 100 * (prior - low) / (high - low)
    return shares.quantile(0.025).item(), shares.quantile(0.975).item()


def minilm_embedder(device: str = "cpu") -> Callable[[list[str]], torch.Tensor]:
    """all-MiniLM-L6-v2 sentence embeddings (the world CLIP's locked text tower), offline from its package."""
    from sentence_transformers import SentenceTransformer   # heavy; only the text-based rows need it
    model = SentenceTransformer(str(minilm_path()), device=device)
    return lambda texts: torch.from_numpy(model.encode(list(texts), batch_size=256, normalize_embeddings=True))


def authors_split_dir() -> Path | None:
    """The authors' released split (labels only): $HYPERCLIP_AUTHORS_SPLIT, else `shared/data/metavqa-authors`
    beside the repository or above it; None when it is not there."""
    if os.environ.get("HYPERCLIP_AUTHORS_SPLIT"):
        return Path(os.environ["HYPERCLIP_AUTHORS_SPLIT"])
    for folder in Path(__file__).resolve().parents:
        if (folder / AUTHORS_SPLIT / "meta_train.json").exists():
            return folder / AUTHORS_SPLIT
    return None
