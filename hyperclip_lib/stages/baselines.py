"""Notebook 02's stage: every baseline row of Table 1 trained (or not), scored on meta-test, recorded.

    run_baseline(cfg, "Uncond. MNet-MAML", data, features)  ->  BaselineResult(record, history, params, family)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import numerics
from ..config import Config
from ..features import FeatureStore
from ..maml import evaluate, train
from ..models.adapter import AdapterSpec
from ..models.families import RECIPES, AdapterFamily, Family, Recipe, make_family
from ..records import Record
from ..store import ArtifactStore, atomic_write_json, config_hash
from ..taskdata import TaskTensors, described_tasks
from .common import stage_key, sweep, timed
from .data import Data, encoder_backend, features_key


@dataclass
class BaselineResult:
    record: dict
    history: dict
    params: dict[str, torch.Tensor]
    family: Family

    @property
    def records(self) -> list[dict]:
        return [self.record]


def recipe_and_config(cfg: Config, method: str) -> tuple[Recipe, object]:
    """A Table 1 row's recipe and its Table 3 config section."""
    if method not in RECIPES:
        raise KeyError(f"unknown method {method!r}; expected one of: {', '.join(RECIPES)}")
    recipe = RECIPES[method]
    return recipe, getattr(cfg, recipe.section)


def selection_metric(recipe: Recipe) -> str:
    """What a baseline's schedule is chosen on, by one rule for all: a method trained to be adapted (MAML,
    FOMAML) on its validation accuracy after few-shot adaptation, any other on its zero-shot accuracy."""
    return "few_shot" if recipe.training in ("maml", "fomaml") else "zero_shot"


def adapter_scorer(cfg: Config, features: FeatureStore) -> AdapterFamily:
    """Scores any adapter weights W on any task: the model family whose inner variable is W itself."""
    return AdapterFamily(AdapterSpec(features.dim, cfg.base.hidden))


def training_pool(cfg: Config, method: str, n_train: int) -> torch.Tensor:
    """Training-task indices a method may use: conditional methods only the described ones."""
    recipe, _ = recipe_and_config(cfg, method)
    if not recipe.conditional:
        return torch.arange(n_train)
    return described_tasks(n_train, cfg.base.descriptor_fraction, cfg.base.seed).nonzero().flatten()


def check_features(cfg: Config, features: FeatureStore) -> FeatureStore:
    """Features a stage may train on: of the width the config's encoder gives (when it is known before
    encoding) and from that kind of encoder, so foreign features fail here, by name, not in a matmul later."""
    world = encoder_backend(cfg) == "world_clip"
    return features.require(dim=cfg.world_clip.embed_dim if world else None,
                            name_prefix="world_clip:" if world else f"open_clip:{cfg.encoder.model}:")


def baseline_key(cfg: Config, method: str, data: Data, features: FeatureStore) -> dict:
    """What a baseline run depends on, the identity of the features it reads included: features from another
    encoder never get the cached results of the first."""
    recipe, method_cfg = recipe_and_config(cfg, method)
    base = dataclasses.asdict(cfg.base)
    if not recipe.conditional:   # descriptors are never read: one model serves every fraction
        base["descriptor_fraction"] = 1.0
    return stage_key("baseline", features=features_key(cfg, data), encoder=features.encoder, method=method,
                     recipe=dataclasses.asdict(recipe), method_cfg=dataclasses.asdict(method_cfg), base=base)


def build_family(cfg: Config, method: str, features: FeatureStore) -> Family:
    recipe, _ = recipe_and_config(cfg, method)
    return make_family(recipe, AdapterSpec(features.dim, cfg.base.hidden), features.question_embeddings.shape[1],
                       cfg.base.hnet_hidden, cfg.base.hnet_latent, cfg.base.device)


def run_baseline(cfg: Config, method: str, data: Data, features: FeatureStore,
                 store: ArtifactStore | None = None) -> BaselineResult:
    """Train and score `method` for `cfg` (seed: cfg.base.seed), or load it from the cache."""
    store = store or ArtifactStore()
    recipe, method_cfg = recipe_and_config(cfg, method)
    family = build_family(cfg, method, check_features(cfg, features))
    key = baseline_key(cfg, method, data, features)

    def build(folder: Path) -> None:
        timings = {}
        with timed(timings, "wall_s"):
            with timed(timings, "train_s"):
                torch.manual_seed(cfg.base.seed)
                train_tasks = TaskTensors.from_tasks(features, data.train_tasks).to(cfg.base.device)
                test_tasks = TaskTensors.from_tasks(features, data.split.test).to(cfg.base.device)
                params = {k: v.to(cfg.base.device).requires_grad_(True)
                          for k, v in family.init_params(torch.Generator().manual_seed(cfg.base.seed)).items()}
                pool = training_pool(cfg, method, len(train_tasks))
                validation = (TaskTensors.from_tasks(features, data.validation_tasks).to(cfg.base.device)
                              if data.validation else None)
                history = train(family, params, recipe.training, method_cfg, cfg.base, train_tasks, pool,
                                cfg.base.seed, test_tasks, desc=method, validation=validation,
                                select_on=selection_metric(recipe))
            scores = evaluate(family, params, test_tasks, cfg.base, few_shot_lr=method_cfg.inner_lr, progress=True)
        record = Record(
            "baseline", method, cfg.profile, cfg.base.seed,
            cfg.base.descriptor_fraction if recipe.conditional else 1.0, test_tasks.questions,
            scores["n_query"].tolist(), {m: scores[m].tolist() for m in ("zero_shot", "few_shot")},
            config_hash(key), timings,
            details={"training_tasks": len(pool), "optimizer_steps": len(history["step"]),
                     **({"validation_tasks": len(data.validation), "selected_on": selection_metric(recipe),
                         "chosen_step": history["chosen_step"]} if "chosen_step" in history else {})},
            compute=numerics.of_key(key, device=cfg.base.device))
        torch.save({k: v.detach().cpu() for k, v in params.items()}, folder / "params.pt")
        atomic_write_json(folder / "history.json", history)
        atomic_write_json(folder / "record.json", record.to_dict(), indent=1)

    folder = store.ensure("baseline", key, build)
    record = json.loads((folder / "record.json").read_text())
    if recipe.conditional:   # one cached model of an unconditional method serves every share
        record["descriptor_fraction"] = cfg.base.descriptor_fraction
    return BaselineResult(record, json.loads((folder / "history.json").read_text()),
                          torch.load(folder / "params.pt", map_location=cfg.base.device, weights_only=True), family)


def run_baselines(cfg: Config, data: Data, features: FeatureStore, methods=None, seeds=(0,),
                  descriptor_fractions=(1.0,), results_dir: str | Path | None = None,
                  store: ArtifactStore | None = None) -> list[BaselineResult]:
    """Every (method, seed, descriptor fraction); unconditional methods once per seed, since they never
    read descriptors. Records are also written to `results_dir` when given."""
    return sweep(cfg, methods or list(RECIPES), seeds, descriptor_fractions,
                 lambda run_cfg, method: run_baseline(run_cfg, method, data, features, store), results_dir,
                 shares_of=lambda method: descriptor_fractions if recipe_and_config(cfg, method)[0].conditional else (1.0,))
