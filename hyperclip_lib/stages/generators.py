"""Notebook 03's stages: the fine-tuned-weights datasets, the HVAE, and the two unconditional generators
(HNet, HVAE) that HyperCLIP guidance and HyperLDM both build on.

* **Fine-tuned datasets**: many (task, adapted z or W) samples, each from an adaptation on a random support
  split of a task — 50 steps from the HNet's z⁰ (lr 0.1, adapting z) or from the MNet-MAML initialisation
  (lr 0.01, adapting W).
* **HVAE**: trained on the MNet fine-tuned weights.
"""
from __future__ import annotations

import json

import torch

from ..config import Config, with_overrides
from ..features import FeatureStore
from ..maml import FineTuned, finetune_dataset, weights_accuracy
from ..models.hvae import HVAE, fit_coordinates, train_hvae
from ..models.latent import LatentGenerator, hnet_generator, hvae_generator
from ..store import ArtifactStore, atomic_write_json
from ..taskdata import TaskTensors, row_chunks
from .baselines import adapter_scorer, baseline_key, recipe_and_config, run_baseline
from .common import stage_key
from .data import Data

GENERATORS = ("HNet", "HVAE")
SOURCES = {"HNet": "Uncond. HNet-MAML", "MNet": "Uncond. MNet-MAML"}   # the baseline each dataset adapts
FINETUNE_SOURCE = {"HNet": "HNet", "HVAE": "MNet"}   # HNet: adapted z⁰; HVAE: adapted MNet-MAML weights


def _source(cfg: Config, source: str) -> tuple[str, float]:
    if source not in SOURCES:
        raise KeyError(f"unknown fine-tuning source {source!r}; expected one of {', '.join(SOURCES)}")
    return SOURCES[source], recipe_and_config(cfg, SOURCES[source])[1].inner_lr


def generator_cfg(cfg: Config) -> Config:
    """The config the generators are built with: the run's seed, every task (an unconditional generator never
    reads a descriptor), so runs that vary only the descriptor share reuse them."""
    return with_overrides(cfg, {"base.descriptor_fraction": 1.0})


def finetuned_key(cfg: Config, source: str, data: Data, features: FeatureStore) -> dict:
    cfg = generator_cfg(cfg)
    method, lr = _source(cfg, source)
    g = cfg.generator
    return stage_key("finetuned", source=baseline_key(cfg, method, data, features), per_task=g.finetune_per_task,
                     steps=g.finetune_steps, lr=lr, seed=cfg.base.seed)


def ensure_finetuned(cfg: Config, source: str, data: Data, features: FeatureStore,
                     store: ArtifactStore | None = None) -> dict[str, FineTuned]:
    """{'train': per_task adaptations of every meta-train task on random splits, 'test': one adaptation
    of every meta-test task on its support set} from the HNet's z⁰ or the MNet-MAML initialisation."""
    store = store or ArtifactStore()
    cfg = generator_cfg(cfg)
    method, lr = _source(cfg, source)
    base = run_baseline(cfg, method, data, features, store)

    def build(folder):
        out = {}
        for split, tasks, per_task, random_splits in (("train", data.train_tasks, cfg.generator.finetune_per_task, True),
                                                      ("test", data.split.test, 1, False)):
            tensors = TaskTensors.from_tasks(features, tasks).to(cfg.base.device)
            ft = finetune_dataset(base.family, base.params, tensors, per_task, cfg.generator.finetune_steps, lr,
                                  cfg.base, cfg.base.seed, random_splits, desc=f"fine-tune {source} ({split})")
            out[split] = {k: v.cpu() for k, v in ft.to_dict().items()}
        torch.save(out, folder / "finetuned.pt")

    folder = store.ensure("finetuned", finetuned_key(cfg, source, data, features), build)
    # Memory-mapped: at `paper` sizes a set is gigabytes (1,740 networks of 394,240 weights at real scale), and
    # the mapped pages are read from the file on demand and can be dropped again, where a loaded copy could not.
    loaded = torch.load(folder / "finetuned.pt", map_location="cpu", mmap=True, weights_only=True)
    return {split: FineTuned(**{k: v.to(cfg.base.device) for k, v in d.items()}) for split, d in loaded.items()}


# The meta-train networks adapted on a random 70% of ALL of a task's data, so their query accuracy is in-sample
# (optimistic); only the meta-test row is a clean held-out figure.
RECONSTRUCTION_ROWS = ("meta-train, in-sample (adapted on data that includes the query set)",
                       "meta-test, held out (adapted on the support set)")


def hvae_key(cfg: Config, data: Data, features: FeatureStore) -> dict:
    cfg = generator_cfg(cfg)
    return stage_key("hvae", finetuned=finetuned_key(cfg, "MNet", data, features),
                     hvae={k: v for k, v in vars(cfg.generator).items() if k.startswith("hvae")}, seed=cfg.base.seed)


def ensure_hvae(cfg: Config, data: Data, features: FeatureStore,
                store: ArtifactStore | None = None) -> tuple[HVAE, dict, dict]:
    """The HVAE trained on MNet fine-tuned weights: (model, training history, reconstruction record)."""
    store = store or ArtifactStore()
    cfg = generator_cfg(cfg)
    g = cfg.generator

    def build(folder):
        finetuned = ensure_finetuned(cfg, "MNet", data, features, store)   # loaded only to build
        scorer = adapter_scorer(cfg, features)
        train_set = finetuned["train"]
        coordinates = fit_coordinates(train_set.weights, g.hvae_pca_components, cfg.base.seed)
        vae = HVAE(coordinates, (g.hvae_hidden1, g.hvae_hidden2), g.hvae_latent,
                   torch.Generator().manual_seed(cfg.base.seed)).to(cfg.base.device)
        history = train_hvae(vae, train_set.weights, train_set.task, g, cfg.base.seed)
        record = {}
        for split, tasks, label in (("train", data.train_tasks, RECONSTRUCTION_ROWS[0]),
                                    ("test", data.split.test, RECONSTRUCTION_ROWS[1])):
            ft = finetuned[split]
            tensors = TaskTensors.from_tasks(features, tasks).to(cfg.base.device)
            decoded_accuracy = []
            for rows in row_chunks(len(ft.task), ft.weights.shape[1]):
                with torch.no_grad():
                    decoded = vae.decode(vae.latent_means(ft.weights[rows]))
                decoded_accuracy.append(weights_accuracy(scorer, decoded, tensors, ft.task[rows]))
            record[label] = {"fine-tuned weights": weights_accuracy(scorer, ft.weights, tensors, ft.task).mean().item(),
                             "decoded (encoder mean)": torch.cat(decoded_accuracy).mean().item()}
        torch.save({k: v.cpu() for k, v in vae.state_dict().items()}, folder / "hvae.pt")
        atomic_write_json(folder / "history.json", history)
        atomic_write_json(folder / "record.json", record, indent=1)

    folder = store.ensure("hvae", hvae_key(cfg, data, features), build)
    vae = HVAE.from_state_dict(torch.load(folder / "hvae.pt", map_location=cfg.base.device, weights_only=True), g)
    return vae, json.loads((folder / "history.json").read_text()), json.loads((folder / "record.json").read_text())


def load_generator(cfg: Config, name: str, data: Data, features: FeatureStore,
                   store: ArtifactStore | None = None) -> LatentGenerator:
    """The unconditional generator `name` ("HNet" or "HVAE"), built (or loaded) with its stages."""
    if name == "HNet":
        hnet = run_baseline(generator_cfg(cfg), SOURCES["HNet"], data, features, store)
        return hnet_generator(hnet.family, hnet.params)
    if name == "HVAE":
        return hvae_generator(ensure_hvae(cfg, data, features, store)[0])
    raise KeyError(f"unknown generator {name!r}; expected one of {', '.join(GENERATORS)}")


def generator_latents(cfg: Config, name: str, data: Data, features: FeatureStore,
                      store: ArtifactStore | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [M, Z], task index [M]) of the fine-tuned meta-train networks in `name`'s latent space:
    the HNet's adapted z, or the HVAE encoder's mean of the MNet fine-tuned weights."""
    ft = ensure_finetuned(cfg, FINETUNE_SOURCE[name], data, features, store)["train"]
    if name == "HNet":
        return ft.latent, ft.task
    return ensure_hvae(cfg, data, features, store)[0].latent_means(ft.weights), ft.task
