"""Notebook 05's stage: the HNet/HVAE + HyperLDM rows of Table 1 and the γ sweep (Fig. 5A).

HyperLDM is trained on a generator's latents (cached; only described tasks carry their condition); then
`samples_per_task` networks per meta-test task are sampled for every γ, decoded and scored zero-shot
(cached too, keyed by the sampling settings).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .. import numerics
from ..config import Config
from ..features import FeatureStore
from ..maml import weights_accuracy
from ..models.families import AdapterFamily
from ..models.hyperldm import TrainedLDM, ldm_sampler, sample, train_ldm
from ..models.latent import LatentGenerator
from ..records import Record
from ..store import ArtifactStore, atomic_write_json, config_hash
from ..taskdata import TaskTensors, described_tasks, row_chunks
from .baselines import adapter_scorer
from .common import stage_key, sweep, timed
from .data import Data
from .generators import FINETUNE_SOURCE, GENERATORS, finetuned_key, generator_latents, load_generator

LDM_METHODS = {"HNet": "HNet + HyperLDM", "HVAE": "HVAE + HyperLDM"}
TRAIN_FIELDS = ("width1", "width2", "width3", "time_dim", "train_steps", "beta_start", "beta_end", "schedule",
                "steps", "batch", "lr", "cond_dropout", "ema_decay", "grad_clip")


@dataclass
class LDMResult:
    records: list[dict]   # one per γ in the sweep
    ldm: TrainedLDM
    weight_gen: LatentGenerator
    samples: dict         # the sampled latents and their accuracies (see sample_and_score)


def scored_gammas(cfg: Config) -> list[float]:
    """The γ grid sampled: all of `ldm.gammas` with every descriptor, `ldm.partial_gammas` with part of them
    (Table 1's 50% column, Fig. 5B: the sweep is the costly part of sampling)."""
    return list(cfg.ldm.gammas if cfg.base.descriptor_fraction == 1.0 else cfg.ldm.partial_gammas)


def sample_and_score(ldm: TrainedLDM, weight_gen: LatentGenerator, scorer: AdapterFamily, tasks: TaskTensors,
                     gammas: list[float], samples_per_task: int, scheduler, steps: int | None,
                     seed: int) -> dict[str, torch.Tensor]:
    """`samples_per_task` latents for every task and every γ, all in one batch; decoded and scored on
    each task's query set. Rows: latents, accuracy (%), task, gamma."""
    device = tasks.text.device
    n_tasks = len(tasks)
    rows_task = torch.arange(n_tasks, device=device).repeat(len(gammas) * samples_per_task)
    rows_gamma = torch.tensor(gammas, device=device).repeat_interleave(n_tasks * samples_per_task)
    z = sample(ldm, tasks.text[rows_task], rows_gamma, scheduler, steps, torch.Generator().manual_seed(seed))
    acc = torch.empty(len(z), device=device)
    for rows in row_chunks(len(z), scorer.spec.n_params):   # the decoded weights of every sample at once: GBs at `paper` size
        rows = rows.to(device)
        with torch.no_grad():
            acc[rows] = weights_accuracy(scorer, weight_gen.decode(z[rows]), tasks, rows_task[rows])
    return {"latents": z, "accuracy": acc, "task": rows_task, "gamma": rows_gamma}


def per_gamma_task_mean(samples: dict, gammas: list[float], n_tasks: int) -> dict[float, torch.Tensor]:
    """γ -> per-task accuracy [T], the mean over that task's samples."""
    out = {}
    for gamma in gammas:
        pick = samples["gamma"].cpu() == gamma
        task = samples["task"].cpu()[pick]
        total = torch.zeros(n_tasks).index_add_(0, task, samples["accuracy"].cpu()[pick])
        out[gamma] = total / torch.bincount(task, minlength=n_tasks).clamp(min=1)
    return out


def tasks_by_guidance(samples: dict, gammas: list[float], n_tasks: int) -> list[int]:
    """Tasks ordered by how much their sampled networks' accuracy changes between the smallest and the largest
    γ of the sweep, most first: where the γ slider has something to show."""
    by_gamma = per_gamma_task_mean(samples, gammas, n_tasks)
    return (by_gamma[max(gammas)] - by_gamma[min(gammas)]).abs().argsort(descending=True, stable=True).tolist()


def ldm_key(cfg: Config, name: str, data: Data, features: FeatureStore) -> dict:
    """What a trained HyperLDM depends on (not how it is sampled)."""
    return stage_key("hyperldm", generator=name, finetuned=finetuned_key(cfg, FINETUNE_SOURCE[name], data, features),
                     generator_cfg=vars(cfg.generator), ldm={k: getattr(cfg.ldm, k) for k in TRAIN_FIELDS},
                     descriptor_fraction=cfg.base.descriptor_fraction, seed=cfg.base.seed)


def ensure_ldm(cfg: Config, name: str, data: Data, features: FeatureStore,
               store: ArtifactStore | None = None) -> TrainedLDM:
    """HyperLDM trained on `name`'s latents of the meta-train networks."""
    store = store or ArtifactStore()
    device = cfg.base.device
    train_tasks = TaskTensors.from_tasks(features, data.train_tasks).to(device)

    def build(folder):
        latents, task = generator_latents(cfg, name, data, features, store)
        described = described_tasks(len(train_tasks), cfg.base.descriptor_fraction, cfg.base.seed).to(device)
        timings = {}
        with timed(timings, "train_s"):
            trained = train_ldm(latents.to(device), train_tasks.text[task.to(device)], described[task.to(device)],
                                cfg.ldm, cfg.base.seed)
        trained.history.update(timings)
        torch.save(trained.state_dict(), folder / "ldm.pt")
        atomic_write_json(folder / "history.json", trained.history)

    folder = store.ensure("hyperldm", ldm_key(cfg, name, data, features), build)
    state = torch.load(folder / "ldm.pt", map_location=device, weights_only=True)
    history = json.loads((folder / "history.json").read_text())
    return TrainedLDM.from_state_dict(state, cfg.ldm, train_tasks.text.shape[1], history).to(device)


def run_hyperldm(cfg: Config, name: str, data: Data, features: FeatureStore,
                 store: ArtifactStore | None = None) -> LDMResult:
    """Train (or load) HyperLDM for `name`, sample and score every γ of `scored_gammas(cfg)`."""
    store = store or ArtifactStore()
    L, device = cfg.ldm, cfg.base.device
    gammas = scored_gammas(cfg)
    weight_gen = load_generator(cfg, name, data, features, store)
    ldm = ensure_ldm(cfg, name, data, features, store)
    test_tasks = TaskTensors.from_tasks(features, data.split.test).to(device)
    scorer = adapter_scorer(cfg, features)
    scheduler, steps = ldm_sampler(L)
    sample_key = stage_key("hyperldm_samples", model=ldm_key(cfg, name, data, features), sampler=L.sampler,
                           sampler_steps=steps, samples_per_task=L.samples_per_task, gammas=gammas)

    def sample_build(folder):
        timings = {}
        with timed(timings, "sample_s"):
            out = sample_and_score(ldm, weight_gen, scorer, test_tasks, gammas, L.samples_per_task, scheduler,
                                   steps, cfg.base.seed)
        torch.save({k: v.cpu() for k, v in out.items()}, folder / "samples.pt")
        atomic_write_json(folder / "timing.json", timings)

    sample_folder = store.ensure("hyperldm_samples", sample_key, sample_build)
    samples = torch.load(sample_folder / "samples.pt", weights_only=True)
    timings = {"train_s": ldm.history["train_s"], **json.loads((sample_folder / "timing.json").read_text())}
    n_query = (test_tasks.n_samples - test_tasks.n_support).double().cpu().tolist()
    records = [Record("hyperldm", f"{LDM_METHODS[name]} γ={gamma:g}", cfg.profile, cfg.base.seed,
                      cfg.base.descriptor_fraction, test_tasks.questions, n_query, {"zero_shot": per_task.tolist()},
                      config_hash(sample_key), timings, gamma=gamma,
                      details={"sampler": L.sampler, "sampler_steps": steps or L.train_steps,
                               "samples_per_task": L.samples_per_task},
                      compute=numerics.of_key(sample_key, device=device)).to_dict()
               for gamma, per_task in per_gamma_task_mean(samples, gammas, len(test_tasks)).items()]
    return LDMResult(records, ldm, weight_gen, samples)


def run_ldm_rows(cfg: Config, data: Data, features: FeatureStore, generators=GENERATORS, seeds=(0,),
                 descriptor_fractions=(1.0,), results_dir=None, store=None) -> list[LDMResult]:
    """HyperLDM for every generator, seed and descriptor share; every γ's record goes to `results_dir`."""
    return sweep(cfg, generators, seeds, descriptor_fractions,
                 lambda run_cfg, name: run_hyperldm(run_cfg, name, data, features, store), results_dir)
