"""Notebook 04's stage: the HNet/HVAE + HyperCLIP guidance rows of Table 1.

CLIP_H is trained on a generator's fine-tuned networks of the described meta-train tasks (cached); then
guidance moves the generator's latent for every meta-test task from its question alone, and the decoded
weights are scored zero-shot (seconds, so not cached: changing a guidance setting never retrains CLIP_H).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .. import numerics
from ..config import Config
from ..features import FeatureStore
from ..maml import FineTuned, weights_accuracy
from ..models.clip_h import HyperClip, guide, task_inference, train_hyperclip
from ..models.hvae import Standardizer
from ..models.latent import LatentGenerator
from ..records import Record
from ..store import ArtifactStore, atomic_write_json, config_hash
from ..taskdata import TaskTensors, described_tasks
from .baselines import adapter_scorer
from .common import stage_key, sweep, timed
from .data import Data
from .generators import FINETUNE_SOURCE, GENERATORS, ensure_finetuned, finetuned_key, load_generator

GUIDANCE_METHODS = {"HNet": "HNet + HyperCLIP Guidance", "HVAE": "HVAE + HyperCLIP Guidance"}
TRAINING_FIELDS = ("hidden", "epochs", "lr", "batch", "logit_scale")   # what CLIP_H's cache key depends on
GUIDANCE_FIELDS = ("guidance_steps", "guidance_lambda", "guidance_lr", "guidance_optimizer")


@dataclass
class GuidanceResult:
    record: dict
    history: dict
    model: HyperClip
    weight_gen: LatentGenerator
    test_networks: FineTuned   # the generator's fine-tuned networks of the meta-test tasks (on their support sets)

    @property
    def records(self) -> list[dict]:
        return [self.record]


def hyperclip_key(cfg: Config, name: str, data: Data, features: FeatureStore) -> dict:
    return stage_key("hyperclip", generator=name, finetuned=finetuned_key(cfg, FINETUNE_SOURCE[name], data, features),
                     generator_cfg=vars(cfg.generator),
                     hyperclip={k: getattr(cfg.hyperclip, k) for k in TRAINING_FIELDS},
                     descriptor_fraction=cfg.base.descriptor_fraction, seed=cfg.base.seed)


def run_hyperclip_guidance(cfg: Config, name: str, data: Data, features: FeatureStore,
                           store: ArtifactStore | None = None) -> GuidanceResult:
    """Train CLIP_H on `name`'s fine-tuned networks (cached), guide `name` for every meta-test task, score."""
    store = store or ArtifactStore()
    h, device = cfg.hyperclip, cfg.base.device
    weight_gen = load_generator(cfg, name, data, features, store)
    finetuned = ensure_finetuned(cfg, FINETUNE_SOURCE[name], data, features, store)
    key = hyperclip_key(cfg, name, data, features)
    scorer = adapter_scorer(cfg, features)
    train_tasks = TaskTensors.from_tasks(features, data.train_tasks).to(device)
    test_tasks = TaskTensors.from_tasks(features, data.split.test).to(device)
    described = described_tasks(len(train_tasks), cfg.base.descriptor_fraction, cfg.base.seed).to(device)

    def build(folder):
        timings = {}
        with timed(timings, "train_s"):
            model = HyperClip(Standardizer.fit(finetuned["train"].weights), h.hidden, train_tasks.text.shape[1],
                              torch.Generator().manual_seed(cfg.base.seed), h.logit_scale).to(device)
            history = train_hyperclip(model, finetuned["train"], train_tasks.text, described.nonzero().flatten(), h,
                                      cfg.base.seed)
        history.update(timings)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, folder / "hyperclip.pt")
        atomic_write_json(folder / "history.json", history)

    folder = store.ensure("hyperclip", key, build)
    model = HyperClip.from_state_dict(torch.load(folder / "hyperclip.pt", map_location=device, weights_only=True),
                                      h.hidden)
    history = json.loads((folder / "history.json").read_text())

    timings = {"train_s": history["train_s"]}
    trajectory, per_step = {"step": [], "cosine": [], "zero_shot": []}, []
    all_tasks = torch.arange(len(test_tasks), device=device)

    def on_step(k, z, cosine):
        with torch.no_grad():
            acc = weights_accuracy(scorer, weight_gen.decode(z), test_tasks, all_tasks)
        trajectory["step"].append(k)
        trajectory["cosine"].append(cosine.mean().item())
        trajectory["zero_shot"].append(acc.mean().item())
        per_step.append(acc)

    with timed(timings, "guidance_s"):
        z_start = weight_gen.start(len(test_tasks), torch.Generator().manual_seed(cfg.base.seed)).to(device)
        guide(weight_gen, model, test_tasks.text, z_start, h.guidance_steps, h.guidance_lambda, h.guidance_lr,
              h.guidance_optimizer, on_step)
    seen = described[finetuned["train"].task].nonzero().flatten()
    record = Record(
        "guidance", GUIDANCE_METHODS[name], cfg.profile, cfg.base.seed, cfg.base.descriptor_fraction,
        test_tasks.questions, (test_tasks.n_samples - test_tasks.n_support).double().tolist(),
        {"zero_shot": per_step[-1].tolist(), "unguided_zero_shot": per_step[0].tolist()},
        config_hash({**key, "hyperclip": vars(h)}), timings,
        details={"task_inference": {"held-out (meta-test)": task_inference(model, finetuned["test"], test_tasks.text),
                                    "meta-train": task_inference(model, finetuned["train"], train_tasks.text, rows=seen)},
                 "trajectory": trajectory, "guidance": {k: getattr(h, k) for k in GUIDANCE_FIELDS}},
        compute={**numerics.of_key(key), "guidance": {**numerics.identity(), "device": device}})
    return GuidanceResult(record.to_dict(), history, model, weight_gen, finetuned["test"])


def run_guidance_rows(cfg: Config, data: Data, features: FeatureStore, generators=GENERATORS, seeds=(0,),
                      descriptor_fractions=(1.0,), results_dir=None, store=None) -> list[GuidanceResult]:
    """Both HyperCLIP-guidance rows of Table 1 for every seed and descriptor share; records also go to
    `results_dir` when given."""
    return sweep(cfg, generators, seeds, descriptor_fractions,
                 lambda run_cfg, name: run_hyperclip_guidance(run_cfg, name, data, features, store), results_dir)
