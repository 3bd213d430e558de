"""Every baseline of Table 1 as one cached stage: train (or not), score on meta-test, write a record.

    run_baseline(cfg, "Uncond. MNet-MAML", data, features)  ->  Result(record, history, params)

A record is plain JSON — method, profile, seed, descriptor fraction, zero-shot and few-shot
accuracy (task mean and sample-weighted, plus per task), config hash, wall time, package
versions — so the analysis notebook can gather records from any number of runs.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .adapter import AdapterSpec
from .config import Config, run_configs
from .features import FeatureStore
from .meta import evaluate, summarize_accuracy, train
from .methods import RECIPES, Family, make_family
from .pipeline import Data, features_key
from .store import ArtifactStore, atomic_write_json, config_hash
from .taskdata import TaskTensors, described_tasks


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


@dataclass
class Result:
    record: dict
    history: dict
    params: dict[str, torch.Tensor]
    family: Family


def recipe_and_config(cfg: Config, method: str) -> tuple:
    if method not in RECIPES:
        raise KeyError(f"unknown method {method!r}; expected one of: {', '.join(RECIPES)}")
    recipe = RECIPES[method]
    return recipe, getattr(cfg, recipe.section)


def package_versions() -> dict[str, str]:
    import numpy
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


def training_pool(cfg: Config, method: str, n_train: int) -> torch.Tensor:
    """Training-task indices a method may use: conditional methods only the described ones."""
    recipe, _ = recipe_and_config(cfg, method)
    if not recipe.conditional:
        return torch.arange(n_train)
    return described_tasks(n_train, cfg.base.descriptor_fraction, cfg.base.seed).nonzero().flatten()


def baseline_key(cfg: Config, method: str, data: Data) -> dict:
    recipe, method_cfg = recipe_and_config(cfg, method)
    base = dataclasses.asdict(cfg.base)
    if not recipe.conditional:   # descriptors are never read: one model serves every fraction
        base["descriptor_fraction"] = 1.0
    return {"features": features_key(cfg, data), "method": method, "recipe": dataclasses.asdict(recipe),
            "method_cfg": dataclasses.asdict(method_cfg), "base": base}


def build_family(cfg: Config, method: str, features: FeatureStore) -> Family:
    recipe, _ = recipe_and_config(cfg, method)
    return make_family(recipe, AdapterSpec(features.dim, cfg.base.hidden), features.question_embeddings.shape[1],
                       cfg.base.hnet_hidden, cfg.base.hnet_latent, cfg.base.device)


def run_baseline(cfg: Config, method: str, data: Data, features: FeatureStore,
                 store: ArtifactStore | None = None) -> Result:
    """Train and score `method` for `cfg` (seed: cfg.base.seed), or load it from the cache."""
    store = store or ArtifactStore()
    recipe, method_cfg = recipe_and_config(cfg, method)
    family = build_family(cfg, method, features)

    def build(folder: Path) -> None:
        start = time.perf_counter()
        torch.manual_seed(cfg.base.seed)
        train_tasks = TaskTensors.from_tasks(features, data.split.train).to(cfg.base.device)
        test_tasks = TaskTensors.from_tasks(features, data.split.test).to(cfg.base.device)
        params = {k: v.to(cfg.base.device).requires_grad_(True)
                  for k, v in family.init_params(torch.Generator().manual_seed(cfg.base.seed)).items()}
        pool = training_pool(cfg, method, len(train_tasks))
        history = train(family, params, recipe.training, method_cfg, cfg.base, train_tasks, pool,
                        cfg.base.seed, test_tasks, desc=method)
        train_s = time.perf_counter() - start
        scores = evaluate(family, params, test_tasks, cfg.base, few_shot_lr=method_cfg.inner_lr, progress=True)
        record = {
            "method": method, "profile": cfg.profile, "seed": cfg.base.seed,
            "descriptor_fraction": cfg.base.descriptor_fraction if recipe.conditional else 1.0,
            "zero_shot": summarize_accuracy(scores["zero_shot"], scores["n_query"]),
            "few_shot": summarize_accuracy(scores["few_shot"], scores["n_query"]),
            "per_task": {q: {"zero_shot": z, "few_shot": f, "n_query": n} for q, z, f, n in zip(
                test_tasks.questions, scores["zero_shot"].tolist(), scores["few_shot"].tolist(),
                scores["n_query"].tolist())},
            "training_tasks": len(pool), "optimizer_steps": len(history["step"]),
            "config_hash": config_hash(baseline_key(cfg, method, data)), "train_s": train_s,
            "wall_s": time.perf_counter() - start, "versions": package_versions(),
        }
        torch.save({k: v.detach().cpu() for k, v in params.items()}, folder / "params.pt")
        atomic_write_json(folder / "history.json", history)
        atomic_write_json(folder / "record.json", record, indent=1)

    folder = store.ensure("baseline", baseline_key(cfg, method, data), build)
    record = json.loads((folder / "record.json").read_text())
    record["descriptor_fraction"] = cfg.base.descriptor_fraction if recipe.conditional else record["descriptor_fraction"]
    return Result(record, json.loads((folder / "history.json").read_text()),
                  torch.load(folder / "params.pt", map_location=cfg.base.device, weights_only=True), family)


def run_baselines(cfg: Config, data: Data, features: FeatureStore, methods=None, seeds=(0,),
                  descriptor_fractions=(1.0,), results_dir: str | Path | None = None,
                  store: ArtifactStore | None = None) -> list[Result]:
    """Every (method, seed, descriptor fraction); unconditional methods once per seed, since they never
    read descriptors. Records are also written to `results_dir` when given."""
    results = []
    for method in methods or list(RECIPES):
        recipe, _ = recipe_and_config(cfg, method)
        for run_cfg in run_configs(cfg, seeds, descriptor_fractions if recipe.conditional else (1.0,)):
            result = run_baseline(run_cfg, method, data, features, store)
            if results_dir is not None:
                save_record(result.record, results_dir)
            results.append(result)
    return results


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


def summary_table(records: list[dict], metric: str = "zero_shot", column: str = "task_mean"):
    """One row per (method, descriptor fraction): mean and s.d. over seeds (s.d. NaN for one seed),
    in the paper's method order."""
    import pandas as pd
    rows = [{"method": r["method"], "descriptors": f"{round(100 * r['descriptor_fraction'])}%",
             "acc": r[metric][column]} for r in records if metric in r]
    df = pd.DataFrame(rows, columns=["method", "descriptors", "acc"])
    out = df.groupby(["method", "descriptors"], sort=False)["acc"].agg(["mean", "std", "count"]).reset_index()
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    order.update({m: len(order) for m in out["method"] if m not in order})
    out = out.sort_values(["method", "descriptors"], ascending=[True, False], key=lambda c: c.map(
        order) if c.name == "method" else c.str.rstrip("%").astype(float))
    return out.rename(columns={"count": "seeds"}).reset_index(drop=True)


def floor_and_ceiling(records: list[dict]) -> tuple[float, float]:
    """Zero-shot floor (CLIP as base model) and few-shot ceiling (the best method's few-shot task
    mean, as the paper's 60.24%), each averaged over seeds."""
    table = summary_table(records, "zero_shot")
    floor = table.loc[table["method"] == "CLIP as base model", "mean"]
    if floor.empty:
        raise ValueError("the records hold no 'CLIP as base model' run, which defines the floor")
    return float(floor.iloc[0]), float(summary_table(records, "few_shot")["mean"].max())


def _mean_sd(mean: float, sd: float) -> str:
    return f"{mean:.2f}" if sd != sd else f"{mean:.2f} ± {sd:.2f}"   # sd != sd: NaN, a single seed


def table1(records: list[dict]):
    """Table 1 as the paper lays it out: zero-shot task mean ± s.d. per descriptor share, the paper's
    number beside ours, and the share of the floor-to-ceiling gap each result closes."""
    import pandas as pd
    floor, ceiling = floor_and_ceiling(records)
    table = summary_table(records, "zero_shot")
    rows = {}
    for m, d, mean, sd, n in table.itertuples(index=False):
        row = rows.setdefault(m, {"method": m})
        row[f"ours {d}"] = _mean_sd(mean, sd)
        row[f"gap closed {d}"] = f"{100 * (mean - floor) / (ceiling - floor):.0f}%"
        row[f"paper {d}"] = PAPER_ZERO_SHOT.get(m, {}).get(d, "")
        row["seeds"] = n
    shares = sorted(set(table["descriptors"]), key=lambda d: -float(d.rstrip("%")))
    columns = ["method"] + [f"{c} {d}" for d in shares for c in ("ours", "paper", "gap closed")] + ["seeds"]
    return pd.DataFrame(list(rows.values()), columns=columns).fillna("")


def table4(records: list[dict]):
    """Table 4: few-shot task mean ± s.d. (all descriptors), the paper's number beside ours."""
    import pandas as pd
    table = summary_table([r for r in records if r["descriptor_fraction"] == 1.0], "few_shot")
    return pd.DataFrame([{"method": m, "ours": _mean_sd(mean, sd), "paper": PAPER_FEW_SHOT.get(m, ""), "seeds": n}
                         for m, d, mean, sd, n in table.itertuples(index=False)])
