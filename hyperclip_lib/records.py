"""Result records: one JSON file per (method, seed, descriptor share), and the paper's tables built from them.

A `Record` is what every stage of Table 1 writes — baselines, HyperCLIP guidance, HyperLDM (one per γ) —
so the analysis can gather records from any number of runs and tell their kinds apart by `kind`. On disk a
record is `Record.to_dict()` as JSON; the tables below read those dicts.
"""
from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import pandas as pd
import torch

from .models.families import RECIPES
from .store import atomic_write_json

KINDS = ("baseline", "guidance", "hyperldm")

# Table 1's rows, in the paper's order; the generative methods come from notebooks 04 and 05.
METHOD_ORDER = [*RECIPES, "HNet + HyperCLIP Guidance", "HVAE + HyperCLIP Guidance", "HNet + HyperLDM γ=1",
                "HNet + HyperLDM γ=1.5", "HVAE + HyperLDM γ=1", "HVAE + HyperLDM γ=1.5"]

# The paper's Table 1 (zero-shot, % task mean; "50%"/"100%" of descriptors) and Table 4 (few-shot).
PAPER_ZERO_SHOT = {
    "CLIP as base model": {"100%": 44.99}, "Uncond. Multitask": {"100%": 53.75},
    "Uncond. MNet-MAML": {"100%": 53.04}, "Uncond. MNet-FOMAML": {"100%": 53.04},
    "Uncond. HNet-MAML": {"100%": 53.37}, "Cond. Multitask": {"50%": 51.68, "100%": 54.12},
    "Cond. Multitask FiLM": {"50%": 51.60, "100%": 53.84}, "Cond. HNet-MAML": {"50%": 51.54, "100%": 53.02},
    "HNet + HyperCLIP Guidance": {"50%": 53.51, "100%": 53.98}, "HVAE + HyperCLIP Guidance": {"50%": 53.82, "100%": 53.91},
    "HNet + HyperLDM γ=1": {"50%": 53.66, "100%": 54.06}, "HNet + HyperLDM γ=1.5": {"50%": 54.08, "100%": 54.30},
    "HVAE + HyperLDM γ=1": {"50%": 54.72, "100%": 55.03}, "HVAE + HyperLDM γ=1.5": {"50%": 54.84, "100%": 55.10},
}
PAPER_FEW_SHOT = {
    "CLIP as base model": 54.93, "Uncond. Multitask": 55.53, "Uncond. MNet-MAML": 60.24,
    "Uncond. MNet-FOMAML": 60.03, "Uncond. HNet-MAML": 58.70, "Cond. Multitask": 59.46, "Cond. HNet-MAML": 59.48,
}
PAPER_FLOOR, PAPER_CEILING = PAPER_ZERO_SHOT["CLIP as base model"]["100%"], max(PAPER_FEW_SHOT.values())


def package_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


def summarize_accuracy(per_task: torch.Tensor, n_query: torch.Tensor) -> dict[str, float]:
    """The task mean (as the paper reports) and the sample-weighted mean of per-task accuracies (%)."""
    n = torch.as_tensor(n_query).double()
    per_task = torch.as_tensor(per_task).double()
    return {"task_mean": per_task.mean().item(), "sample_weighted": (per_task * n).sum().item() / n.sum().item()}


@dataclass
class Record:
    """One method's meta-test accuracy for one seed and descriptor share. `scores` holds the per-task
    accuracies (%) by metric ("zero_shot", and "few_shot" / "unguided_zero_shot" where the kind has them)."""
    kind: str                   # one of KINDS
    method: str
    profile: str
    seed: int
    descriptor_fraction: float
    questions: list[str]
    n_query: list
    scores: dict[str, list[float]]
    config_hash: str
    timings: dict[str, float]   # seconds, by phase
    details: dict = field(default_factory=dict)   # kind-specific: training tasks, task inference, sampler, ...
    gamma: float | None = None  # HyperLDM's guidance scale
    compute: dict = field(default_factory=dict)   # stage -> threads, CPU code paths, device it ran with (numerics.of_key)
    versions: dict = field(default_factory=package_versions)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"record kind {self.kind!r}; expected one of {KINDS}")

    def to_dict(self) -> dict:
        n_query = torch.tensor(self.n_query)
        out = {"kind": self.kind, "method": self.method, "profile": self.profile, "seed": self.seed,
               "descriptor_fraction": self.descriptor_fraction}
        if self.gamma is not None:
            out["gamma"] = self.gamma
        out.update({metric: summarize_accuracy(torch.tensor(acc), n_query) for metric, acc in self.scores.items()})
        out["per_task"] = {q: {**{metric: acc[i] for metric, acc in self.scores.items()}, "n_query": self.n_query[i]}
                           for i, q in enumerate(self.questions)}
        return {**out, "details": self.details, "config_hash": self.config_hash, "timings": self.timings,
                "compute": self.compute, "versions": self.versions}


def record_name(record: dict) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", record["method"].lower()).strip("-")
    return f"{slug}_seed{record['seed']}_q{round(100 * record['descriptor_fraction'])}.json"


def save_record(record: dict, folder: str | Path) -> Path:
    path = Path(folder) / record_name(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record, indent=1)
    return path


def load_records(folder: str | Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


# --- the paper's tables -----------------------------------------------------------------------------

def summary_table(records: list[dict], metric: str = "zero_shot", column: str = "task_mean") -> pd.DataFrame:
    """One row per (method, descriptor fraction): mean and s.d. over seeds (s.d. NaN for one seed),
    in the paper's method order."""
    rows = [{"method": r["method"], "descriptors": f"{round(100 * r['descriptor_fraction'])}%",
             "acc": r[metric][column]} for r in records if metric in r]
    df = pd.DataFrame(rows, columns=["method", "descriptors", "acc"])
    out = df.groupby(["method", "descriptors"], sort=False)["acc"].agg(["mean", "std", "count"]).reset_index()
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    order.update({m: len(order) for m in out["method"] if m not in order})
    out = out.sort_values(["method", "descriptors"], ascending=[True, False], key=lambda c: c.map(
        order) if c.name == "method" else c.str.rstrip("%").astype(float))
    return out.rename(columns={"count": "seeds"}).reset_index(drop=True)


def stage_times(records: list[dict]) -> pd.DataFrame:
    """Minutes per stage (record kind) and timing (train_s, sample_s, ...), summed over the artifacts behind
    the records, each counted once: the γ rows of one HyperLDM sampling share one artifact and its timings.
    A cached artifact reports the time it took when it was built."""
    artifacts = {(r["kind"], r["config_hash"]): r.get("timings", {}) for r in records}
    totals: dict[tuple[str, str], float] = {}
    for (kind, _), timings in artifacts.items():
        for name, seconds in timings.items():
            totals[(kind, name)] = totals.get((kind, name), 0.0) + seconds
    counts = pd.Series([kind for kind, _ in artifacts]).value_counts()
    return pd.DataFrame([{"stage": kind, "timing": name, "artifacts": int(counts[kind]), "minutes": round(s / 60, 1)}
                         for (kind, name), s in sorted(totals.items())],
                        columns=["stage", "timing", "artifacts", "minutes"])


def floor_and_ceiling(records: list[dict]) -> tuple[float, float]:
    """Zero-shot floor (CLIP as base model) and few-shot ceiling (the best method's few-shot task
    mean, as the paper's 60.24%), each averaged over seeds."""
    table = summary_table(records, "zero_shot")
    floor = table.loc[table["method"] == "CLIP as base model", "mean"]
    if floor.empty:
        raise ValueError("the records hold no 'CLIP as base model' run, which defines the floor")
    return float(floor.iloc[0]), float(summary_table(records, "few_shot")["mean"].max())


def gap_closed(acc, floor: float, ceiling: float):
    """Share (%) of the floor-to-ceiling gap that an accuracy closes."""
    return 100 * (acc - floor) / (ceiling - floor)


def mean_sd(mean: float, sd: float) -> str:
    return f"{mean:.2f}" if sd != sd else f"{mean:.2f} ± {sd:.2f}"   # sd != sd: NaN, a single seed


# How the baselines of a benchmark must behave to be like real Meta-VQA's (issue 23's pre-registered bands; the
# paper's own values: +11.2, +8.8, +6.5, +15.3, +0.4, +8.0), each read off the 100%-descriptor records
BASELINE_BANDS: dict[str, tuple[float | None, float | None]] = {
    "floor − support majority": (5, None),
    "domain gap: best unconditional zero-shot − floor": (3, 13),
    "task window: best few-shot − best unconditional zero-shot": (4, 10),
    "best few-shot − floor": (10, None),
    "Cond. Multitask − Uncond. Multitask, zero-shot": (-0.5, None),
    "lowest baseline zero-shot − floor": (0, None),
}


def baseline_statistics(records: list[dict], support_majority: float) -> dict[str, float]:
    """BASELINE_BANDS' statistics (points, means over the records' seeds) and, reported beside them, whether a
    MAML row is the best few-shot one. `support_majority`: the meta-test task mean of the support set's
    majority answer (notebook 01). A statistic whose methods are not in the records is NaN."""
    baselines = [r for r in records if r["kind"] == "baseline" and r["descriptor_fraction"] == 1.0]
    zero = summary_table(baselines, "zero_shot").set_index("method")["mean"]
    few = summary_table(baselines, "few_shot").set_index("method")["mean"]
    nan = float("nan")
    floor = zero.get("CLIP as base model", nan)
    unconditional = zero[[m for m in zero.index if m in RECIPES and not RECIPES[m].conditional
                          and m != "CLIP as base model"]]
    best_unconditional = unconditional.max() if len(unconditional) else nan
    best_few = few.max() if len(few) else nan
    trained = zero.drop("CLIP as base model", errors="ignore")
    return {
        "floor − support majority": floor - support_majority,
        "domain gap: best unconditional zero-shot − floor": best_unconditional - floor,
        "task window: best few-shot − best unconditional zero-shot": best_few - best_unconditional,
        "best few-shot − floor": best_few - floor,
        "Cond. Multitask − Uncond. Multitask, zero-shot": zero.get("Cond. Multitask", nan) - zero.get("Uncond. Multitask", nan),
        "lowest baseline zero-shot − floor": (trained.min() if len(trained) else nan) - floor,
        "a MAML row is best few-shot (1 = yes)": float(RECIPES[few.idxmax()].training in ("maml", "fomaml"))
        if len(few) else nan,
    }


def table1(records: list[dict], paper_gap: bool = False) -> pd.DataFrame:
    """Table 1 as the paper lays it out: zero-shot task mean ± s.d. per descriptor share, the paper's
    number beside ours, and the share of the floor-to-ceiling gap each result closes (with `paper_gap`,
    also the paper's own share of its gap, which puts both benchmarks on one scale)."""
    floor, ceiling = floor_and_ceiling(records)
    table = summary_table(records, "zero_shot")
    rows = {}
    for m, d, mean, sd, n in table.itertuples(index=False):
        row = rows.setdefault(m, {"method": m})
        paper = PAPER_ZERO_SHOT.get(m, {}).get(d, "")
        row[f"ours {d}"] = mean_sd(mean, sd)
        row[f"gap closed {d}"] = f"{gap_closed(mean, floor, ceiling):.0f}%"
        row[f"paper {d}"] = paper
        row[f"paper gap closed {d}"] = "" if paper == "" else f"{gap_closed(paper, PAPER_FLOOR, PAPER_CEILING):.0f}%"
        row["seeds"] = n
    shares = sorted(set(table["descriptors"]), key=lambda d: -float(d.rstrip("%")))
    kinds = ("ours", "paper", "gap closed", "paper gap closed") if paper_gap else ("ours", "paper", "gap closed")
    columns = ["method"] + [f"{c} {d}" for d in shares for c in kinds] + ["seeds"]
    return pd.DataFrame(list(rows.values()), columns=columns).fillna("")


def table4(records: list[dict]) -> pd.DataFrame:
    """Table 4: few-shot task mean ± s.d. (all descriptors), the paper's number beside ours."""
    table = summary_table([r for r in records if r["descriptor_fraction"] == 1.0], "few_shot")
    return pd.DataFrame([{"method": m, "ours": mean_sd(mean, sd), "paper": PAPER_FEW_SHOT.get(m, ""), "seeds": n}
                         for m, d, mean, sd, n in table.itertuples(index=False)])
