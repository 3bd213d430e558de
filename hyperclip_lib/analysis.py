"""A run's records gathered into the paper's tables and claims (notebook 06, `summary.md`).

Every number is a mean over the seeds found in the records; the floor (CLIP as base model, zero-shot)
and the ceiling (the best few-shot task mean) turn each into the share of the gap it closes, which is
also how ours and the paper's numbers are put on one scale (their benchmark is not ours).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .records import (METHOD_ORDER, PAPER_CEILING, PAPER_FEW_SHOT, PAPER_FLOOR, PAPER_ZERO_SHOT, floor_and_ceiling,
                      load_records, mean_sd, summary_table, table1, table4)
from .world import question_label

TABLE1_SHARES = (1.0, 0.5)
BOOTSTRAP_SAMPLES = 2000
FIG5B_METHODS = ("Cond. Multitask", "HVAE + HyperLDM γ=1.5")


def load_run(records_dir: str | Path, profile: str | None = None) -> list[dict]:
    """The records in `records_dir` (of `profile` only, when given); a clear error when there are none."""
    records = [r for r in load_records(records_dir) if profile is None or r.get("profile") == profile]
    if not records:
        raise FileNotFoundError(f"no result records{f' of profile {profile!r}' if profile else ''} in "
                                f"{records_dir}; run notebooks 02-05 (or `hyperclip run-notebooks`) first")
    return records


def table1_records(records: list[dict]) -> list[dict]:
    """Table 1's rows only: its methods (HyperLDM at γ = 1 and 1.5) at 100% and 50% of descriptors."""
    return [r for r in records if r["method"] in METHOD_ORDER and r["descriptor_fraction"] in TABLE1_SHARES]


def fraction_table(records: list[dict], methods=FIG5B_METHODS) -> pd.DataFrame:
    """Fig. 5B's numbers: zero-shot task mean ± s.d. for `methods` at every descriptor share run."""
    table = summary_table([r for r in records if r["method"] in methods], "zero_shot")
    table["share"] = table["descriptors"].str.rstrip("%").astype(float) / 100
    return table


def gamma_table(records: list[dict], shares=(1.0,)) -> pd.DataFrame:
    """Fig. 5A's numbers: zero-shot task mean ± s.d. over seeds per generator, descriptor share and γ
    (`shares`: which descriptor shares; None: all)."""
    rows = [{"generator": r["method"].split(" +")[0], "descriptors": r["descriptor_fraction"], "γ": r["gamma"],
             "acc": r["zero_shot"]["task_mean"]}
            for r in records if r.get("kind") == "hyperldm" and (shares is None or r["descriptor_fraction"] in shares)]
    if not rows:
        return pd.DataFrame(columns=["generator", "descriptors", "γ", "mean", "std", "seeds"])
    return (pd.DataFrame(rows).groupby(["generator", "descriptors", "γ"])["acc"].agg(["mean", "std", "count"])
            .rename(columns={"count": "seeds"}).reset_index())


def results_tables(records_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Table 1, Table 4 and Fig. 5B's numbers for a run folder's records, titled for `summary.md`."""
    records = load_run(records_dir)
    tables = {}
    for profile in sorted({r["profile"] for r in records}):
        mine = [r for r in records if r["profile"] == profile]
        try:
            floor, ceiling = floor_and_ceiling(mine)
        except ValueError as e:
            tables[f"{profile}: no tables"] = pd.DataFrame({"why": [str(e)]})
            continue
        tables[f"Table 1 ({profile}): zero-shot accuracy (%, task mean ± s.d. over seeds); floor {floor:.2f}, "
               f"ceiling {ceiling:.2f}"] = table1(table1_records(mine))
        tables[f"Table 4 ({profile}): few-shot accuracy (%)"] = table4(mine)
        fig5b = fraction_table(mine)
        if len(fig5b):
            tables[f"Fig. 5B ({profile}): zero-shot accuracy (%) against the share of descriptors"] = (
                fig5b.assign(acc=[mean_sd(m, s) for m, s in zip(fig5b["mean"], fig5b["std"])])
                [["method", "descriptors", "acc", "seeds"]])
    return tables


def _values(records: list[dict], method: str, share: float = 1.0, metric: str = "zero_shot") -> list[float]:
    return [r[metric]["task_mean"] for r in records
            if r["method"] == method and r["descriptor_fraction"] == share and metric in r]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class Comparison:
    """Method a minus method b on the same meta-test tasks and seeds: the mean difference of per-task
    accuracies (points) and its 95% paired-bootstrap interval."""
    a: float
    b: float
    diff: float
    low: float
    high: float
    seeds: int
    tasks: int

    @property
    def verdict(self) -> str:
        """"yes" when the whole interval lies above 0, "no" when below, else "within noise"."""
        return "yes" if self.low > 0 else "no" if self.high < 0 else "within noise"

    def __str__(self) -> str:
        return f"{self.a:.2f} vs {self.b:.2f} (Δ {self.diff:+.2f}, 95% CI [{self.low:+.2f}, {self.high:+.2f}])"


def per_task_matrix(records: list[dict], method: str, share: float, metric: str) -> dict[int, dict[str, float]]:
    """seed -> {question: accuracy} of one method, descriptor share and metric."""
    return {r["seed"]: {q: t[metric] for q, t in r["per_task"].items()} for r in records
            if r["method"] == method and r["descriptor_fraction"] == share and metric in r}


def compare(records: list[dict], a: str, b: str, share: float = 1.0, metric_a: str = "zero_shot",
            metric_b: str = "zero_shot", n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison | None:
    """Paired comparison over seeds × tasks: each (seed, task) difference pairs a's and b's accuracy on the
    same task in the same seed. The bootstrap resamples seeds, then tasks, with replacement, so the interval
    holds both sources of noise. None when a seed with both is missing."""
    ra, rb = per_task_matrix(records, a, share, metric_a), per_task_matrix(records, b, share, metric_b)
    seeds = sorted(ra.keys() & rb.keys())
    if not seeds:
        return None
    questions = sorted(set.intersection(*(set(ra[s]) & set(rb[s]) for s in seeds)))
    A = np.array([[ra[s][q] for q in questions] for s in seeds])
    B = np.array([[rb[s][q] for q in questions] for s in seeds])
    D = A - B
    rng = np.random.default_rng(seed)
    pick_seeds = rng.integers(len(seeds), size=(n_boot, len(seeds)))
    pick_tasks = rng.integers(len(questions), size=(n_boot, len(questions)))
    boot = D[pick_seeds[:, :, None], pick_tasks[:, None, :]].mean(axis=(1, 2))
    low, high = np.percentile(boot, [2.5, 97.5])
    return Comparison(A.mean(), B.mean(), D.mean(), float(low), float(high), len(seeds), len(questions))


def paper_zs(method: str, share: str = "100%") -> str:
    return f"{PAPER_ZERO_SHOT[method][share]:.2f}"


def paper_vs(a: str, b: str, share: str = "100%") -> str:
    return f"{paper_zs(a, share)} vs {paper_zs(b, share)}"


def paper_drop(method: str) -> float:
    """How much the paper's zero-shot accuracy of `method` drops from 100% to 50% of descriptors."""
    return PAPER_ZERO_SHOT[method]["100%"] - PAPER_ZERO_SHOT[method]["50%"]


def paper_claims(records: list[dict]) -> pd.DataFrame:
    """The paper's main claims (§6.2, Table 1, Table 4, Fig. 5), each tested on these records: what the
    paper reports, what we measure, and whether the claim holds here. A claim that one method beats another
    is judged by a paired bootstrap over seeds × tasks (`compare`): "yes"/"no" when the 95% interval of the
    difference excludes 0, "within noise" when it does not."""
    floor, ceiling = floor_and_ceiling(records)
    rows = []

    def claim(text, paper, ours, holds):
        rows.append({"claim": text, "paper": paper, "ours": ours, "holds": holds})

    def paired(text, paper, a, b, share=1.0, metric_b="zero_shot"):
        result = compare(records, a, b, share, metric_b=metric_b)
        claim(text, paper, str(result) if result else "", result.verdict if result else "n/a")

    zero = summary_table(table1_records(records), "zero_shot")
    full = zero[zero["descriptors"] == "100%"].set_index("method")["mean"]
    others = full.drop("CLIP as base model", errors="ignore")
    paper_full = {m: v["100%"] for m, v in PAPER_ZERO_SHOT.items() if m != "CLIP as base model"}
    claim("every method beats CLIP as base model zero-shot",
          f"all ≥ {min(paper_full.values()):.2f} vs {PAPER_FLOOR:.2f}",
          f"lowest {others.min():.2f} ({others.idxmin()}) vs {floor:.2f}" if len(others) else "",
          ("yes" if (others > floor).all() else "no") if len(others) else "n/a")
    claim("no zero-shot method reaches the few-shot ceiling (a sanity check: one that does has seen its task)",
          f"best {max(paper_full.values()):.2f} vs {PAPER_CEILING:.2f}",
          f"best {full.max():.2f} ({full.idxmax()}) vs {ceiling:.2f}", "yes" if full.max() < ceiling else "no")
    best = full.idxmax()
    claim("HVAE + HyperLDM γ=1.5 is the best zero-shot method", f"{paper_zs('HVAE + HyperLDM γ=1.5')}, best of Table 1",
          f"best: {best} {full.max():.2f}", "yes" if best == "HVAE + HyperLDM γ=1.5" else "no")
    paired("HVAE + HyperLDM γ=1.5 beats Cond. Multitask", paper_vs("HVAE + HyperLDM γ=1.5", "Cond. Multitask"),
           "HVAE + HyperLDM γ=1.5", "Cond. Multitask")
    for gen in ("HNet", "HVAE"):
        paired(f"{gen}: HyperLDM γ=1.5 beats HyperCLIP guidance",
               paper_vs(f"{gen} + HyperLDM γ=1.5", f"{gen} + HyperCLIP Guidance"),
               f"{gen} + HyperLDM γ=1.5", f"{gen} + HyperCLIP Guidance")
    paired("HyperLDM works better on the HVAE than on the HNet", paper_vs("HVAE + HyperLDM γ=1.5", "HNet + HyperLDM γ=1.5"),
           "HVAE + HyperLDM γ=1.5", "HNet + HyperLDM γ=1.5")
    for gen, part in gamma_table(records).groupby("generator"):
        best_gamma = float(part.loc[part["mean"].idxmax(), "γ"])
        claim(f"{gen} + HyperLDM: the best guidance scale is above γ=1 (Fig. 5A)", "optimum at γ > 1",
              f"best γ = {best_gamma:g} ({part['mean'].max():.2f})", "yes" if best_gamma > 1 else "no")
    for gen in ("HNet", "HVAE"):
        method = f"{gen} + HyperCLIP Guidance"
        if per_task_matrix(records, method, 1.0, "unguided_zero_shot"):
            paper = (paper_vs(method, "Uncond. HNet-MAML") + " (HNet-MAML)" if gen == "HNet"
                     else f"{paper_zs(method)} (no unguided number)")
            paired(f"HyperCLIP guidance improves on the unguided {gen}", paper, method, method,
                   metric_b="unguided_zero_shot")
    lowest = min((r["descriptor_fraction"] for r in records if r["method"] in FIG5B_METHODS), default=1.0)
    if lowest < 1.0:
        cond = {share: _values(records, "Cond. Multitask", share) for share in (1.0, lowest)}
        ldm = {share: _values(records, "HVAE + HyperLDM γ=1.5", share) for share in (1.0, lowest)}
        drop_cond, drop_ldm = (_mean(v[1.0]) - _mean(v[lowest]) for v in (cond, ldm))
        known = drop_cond == drop_cond and drop_ldm == drop_ldm   # NaN when a share was not run
        share = f"{100 * lowest:.0f}%"
        claim(f"with {share} of descriptors Cond. Multitask loses more than HVAE + HyperLDM γ=1.5 (Fig. 5B)",
              f"at 50%: −{paper_drop('Cond. Multitask'):.2f} vs −{paper_drop('HVAE + HyperLDM γ=1.5'):.2f}",
              f"−{drop_cond:.2f} vs −{drop_ldm:.2f}",
              ("yes" if drop_cond > drop_ldm else "no") if known else "n/a")
        claim(f"HVAE + HyperLDM γ=1.5 is almost unaffected by keeping {share} of descriptors (< 1 point)",
              f"at 50%: −{paper_drop('HVAE + HyperLDM γ=1.5'):.2f}", f"−{drop_ldm:.2f}",
              ("yes" if drop_ldm < 1 else "no") if known else "n/a")
        paired(f"with {share} of descriptors HVAE + HyperLDM γ=1.5 beats Cond. Multitask (Fig. 5B)",
               "at 50%: " + paper_vs("HVAE + HyperLDM γ=1.5", "Cond. Multitask", "50%"),
               "HVAE + HyperLDM γ=1.5", "Cond. Multitask", lowest)
    few = summary_table([r for r in records if r["descriptor_fraction"] == 1.0], "few_shot").set_index("method")["mean"]
    if len(few):
        best_paper = max(PAPER_FEW_SHOT, key=PAPER_FEW_SHOT.get)
        claim("a MAML-trained method is best few-shot (Table 4)", f"{best_paper} {PAPER_FEW_SHOT[best_paper]:.2f}",
              f"best: {few.idxmax()} {few.max():.2f}", "yes" if "MAML" in few.idxmax() else "no")
    table = pd.DataFrame(rows)
    table.attrs.update(floor=floor, ceiling=ceiling)
    return table


def family_table(records: list[dict], share: float = 1.0, metric: str = "zero_shot") -> pd.DataFrame:
    """Task-mean accuracy (%) per method and question family (the Shapes world's families; for other data
    the question's first two words), averaged over seeds; the last row counts the tasks of each family."""
    mine = [r for r in table1_records(records) if r["descriptor_fraction"] == share and metric in r]
    if not mine:
        return pd.DataFrame()
    rows = {}
    for r in mine:
        for question, scores in r["per_task"].items():
            rows.setdefault(r["method"], {}).setdefault(question_label(question), []).append(scores[metric])
    table = pd.DataFrame({m: {f: float(np.mean(v)) for f, v in fams.items()} for m, fams in rows.items()}).T
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    table = table.loc[sorted(table.index, key=lambda m: order.get(m, len(order)))]
    counts = Counter(question_label(q) for q in mine[0]["per_task"])
    table.loc["tasks"] = [counts[f] for f in table.columns]
    return table.round(2)


def guidance_facts(records: list[dict]) -> pd.DataFrame:
    """Notebook 04's reading, per HyperCLIP-guidance row (all descriptors, means over seeds): held-out task
    inference against chance, and zero-shot accuracy guided against the unguided start."""
    rows = []
    for method in sorted({r["method"] for r in records if r.get("kind") == "guidance"}):
        mine = [r for r in records if r["method"] == method and r["descriptor_fraction"] == 1.0]
        held_out = [r["details"]["task_inference"]["held-out (meta-test)"] for r in mine]
        rows.append({"method": method, "seeds": len(mine),
                     **{k: _mean([h[k] for h in held_out]) for k in ("top1", "chance top1", "top5", "chance top5")},
                     "unguided zero-shot": _mean([r["unguided_zero_shot"]["task_mean"] for r in mine]),
                     "guided zero-shot": _mean([r["zero_shot"]["task_mean"] for r in mine])})
    return pd.DataFrame(rows).round(2)


def hyperldm_facts(records: list[dict]) -> pd.DataFrame:
    """Notebook 05's reading, per generator (all descriptors, means over seeds): zero-shot accuracy
    unconditional (γ = 0), conditional (γ = 1), guided (γ = 1.5), and the best γ of the sweep."""
    sweep = gamma_table(records)
    rows = []
    for gen, part in sweep.groupby("generator"):
        at = dict(zip(part["γ"], part["mean"]))
        best = part.loc[part["mean"].idxmax()]
        rows.append({"generator": gen, **{f"γ={g:g}": at.get(g, float("nan")) for g in (0.0, 1.0, 1.5)},
                     "best γ": best["γ"], "best accuracy": best["mean"]})
    return pd.DataFrame(rows).round(2)
