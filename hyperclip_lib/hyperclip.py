"""HyperCLIP (paper §4, Algorithm 1) and HyperCLIP guidance (Eq. 4, Algorithm 11).

CLIP_H maps flattened adapter weights W to the text-embedding space of the frozen encoder: one hidden
tanh layer (A.2) over per-dimension standardised weights. It is trained with open_clip's own symmetric
contrastive `ClipLoss` (as the world CLIP) against the questions of the tasks the weights were fine-tuned
on, at a fixed logit scale. Guidance then moves a generator's latent z to raise
cos(CLIP_H(h(z)), CLIP_T(t_i)), with a penalty λ‖z − z_start‖ keeping it near where it started.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from .generators import FineTuned, LatentGenerator, Standardizer, mlp, mlp_params, weights_accuracy
from .taskdata import TaskTensors


@dataclass
class HyperClip:
    params: dict
    scale: Standardizer

    @staticmethod
    def create(n_weights: int, hidden: int, text_dim: int, scale: Standardizer, generator: torch.Generator) -> "HyperClip":
        params = mlp_params("clip_h", [n_weights, hidden, text_dim], generator)
        params["clip_h.0.W"] *= 0.5 ** 0.5   # Kaiming's ReLU gain of √2 removed: the hidden layer is tanh
        return HyperClip(params, scale)

    def embed(self, W: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP_H(W) [.., E]."""
        return F.normalize(mlp(self.params, "clip_h", self.scale(W), activation=torch.tanh), dim=-1)


def contrastive_loss(weight_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (weights, question) pairs: open_clip's ClipLoss."""
    return ClipLoss()(weight_emb, F.normalize(text_emb, dim=-1), torch.tensor(logit_scale))


def train_hyperclip(model: HyperClip, data: FineTuned, text: torch.Tensor, tasks: torch.Tensor, epochs: int,
                    lr: float, batch_size: int, logit_scale: float, seed: int) -> dict:
    """Adam on CLIP_H (Algorithm 1). An epoch is one pass over `tasks` (indices of described tasks) in
    batches of distinct tasks, one random fine-tuned network of each, so no batch holds two networks of
    one task as false negatives. `text[t]` is task t's question embedding."""
    generator = torch.Generator().manual_seed(seed)
    leaves = list(model.params.values())
    optimizer = torch.optim.Adam(leaves, lr=lr)
    rows_of = {int(t): torch.nonzero(data.task == t).flatten() for t in tasks}
    history = {"step": [], "loss": []}
    for _ in tqdm(range(epochs), desc="HyperCLIP", leave=False):
        for idx in tasks[torch.randperm(len(tasks), generator=generator)].split(batch_size):
            if len(idx) < 2:
                continue
            rows = torch.stack([rows_of[int(t)][torch.randint(len(rows_of[int(t)]), (1,), generator=generator)]
                                for t in idx]).flatten()
            loss = contrastive_loss(model.embed(data.weights[rows]), text[data.task[rows]], logit_scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["step"].append(len(history["step"]) + 1)
            history["loss"].append(loss.item())
    return history


def similarity(model: HyperClip, weights: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[networks, questions] cosine similarity of CLIP_H(W) and the question embeddings."""
    with torch.no_grad():
        return model.embed(weights) @ F.normalize(text, dim=-1).T


def task_inference(model: HyperClip, data: FineTuned, text: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Fig. 3: for each fine-tuned network, is its own task's question the most similar of all candidate
    questions (`text`, one per task of its split)? Top-1 and top-k accuracy (%) against chance."""
    sim = similarity(model, data.weights, text)
    rank = (sim > sim.gather(1, data.task[:, None])).sum(1)
    n = text.shape[0]
    return {"top1": 100 * (rank == 0).float().mean().item(), f"top{k}": 100 * (rank < k).float().mean().item(),
            "chance top1": 100 / n, f"chance top{k}": 100 * min(k, n) / n, "candidates": n}


def guide(generator: LatentGenerator, model: HyperClip, text: torch.Tensor, z_start: torch.Tensor, steps: int,
          lam: float, lr: float, optimizer: str = "sgd", on_step=None) -> torch.Tensor:
    """Minimise Eq. 4 for every task at once: z [T, Z], text [T, E] (task i's question), by plain gradient
    descent ("sgd") or Adam ("adam"; per-coordinate steps of about `lr`, whatever the gradient's scale).
    `on_step(k, z, cosine)` sees each iterate (k = 0 is the start)."""
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"hyperclip.guidance_optimizer is {optimizer!r}; expected 'sgd' or 'adam'")
    target = F.normalize(text, dim=-1)
    z = z_start.detach().clone().requires_grad_(True)
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)([z], lr=lr)
    for k in range(steps + 1):
        cosine = (model.embed(generator.decode(z)) * target).sum(-1)
        if on_step is not None:
            on_step(k, z.detach(), cosine.detach())
        if k == steps:
            break
        # Summed over tasks: each task's z gets its own gradient (Adam's moments are per coordinate too).
        loss = (-cosine + lam * (z - z_start).norm(dim=-1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return z.detach()


# --- the cached stage: HNet/HVAE + HyperCLIP guidance rows of Table 1 -------------------------------

GUIDANCE_METHODS = {"HNet": "HNet + HyperCLIP Guidance", "HVAE": "HVAE + HyperCLIP Guidance"}
FINETUNE_SOURCE = {"HNet": "HNet", "HVAE": "MNet"}   # HNet: adapted z⁰; HVAE: adapted MNet-MAML weights


@dataclass
class GuidanceResult:
    record: dict
    history: dict
    model: HyperClip
    generator: LatentGenerator
    finetuned: dict[str, FineTuned]


def load_generator(cfg, name: str, data, features, store=None) -> LatentGenerator:
    from .baselines import run_baseline
    from .generators import SOURCES, ensure_hvae, generator_cfg, hnet_generator, hvae_generator
    if name == "HNet":
        hnet = run_baseline(generator_cfg(cfg), SOURCES["HNet"], data, features, store)
        return hnet_generator(hnet.family, hnet.params)
    if name == "HVAE":
        return hvae_generator(ensure_hvae(cfg, data, features, store)[0])
    raise KeyError(f"unknown generator {name!r}; expected 'HNet' or 'HVAE'")


TRAINING_FIELDS = ("hidden", "epochs", "lr", "batch", "logit_scale")   # what CLIP_H's cache key depends on


def run_hyperclip_guidance(cfg, name: str, data, features, store=None) -> GuidanceResult:
    """Train CLIP_H on `name`'s fine-tuned networks of the described meta-train tasks (a cached stage),
    then guide the generator for every meta-test task from its question alone and score the result
    zero-shot (seconds, so not cached: changing a guidance setting never retrains CLIP_H)."""
    from .baselines import build_family, package_versions
    from .generators import ensure_finetuned, finetuned_key
    from .meta import summarize_accuracy
    from .store import ArtifactStore, atomic_write_json, config_hash
    from .taskdata import described_tasks
    store = store or ArtifactStore()
    h, device = cfg.hyperclip, cfg.base.device
    generator = load_generator(cfg, name, data, features, store)
    finetuned = ensure_finetuned(cfg, FINETUNE_SOURCE[name], data, features, store)
    key = {"generator": name, "finetuned": finetuned_key(cfg, FINETUNE_SOURCE[name], data),
           "generator_cfg": vars(cfg.generator), "hyperclip": {k: getattr(h, k) for k in TRAINING_FIELDS},
           "descriptor_fraction": cfg.base.descriptor_fraction, "seed": cfg.base.seed}
    family = build_family(cfg, "Uncond. MNet-MAML", features)
    train_tasks = TaskTensors.from_tasks(features, data.split.train).to(device)
    test_tasks = TaskTensors.from_tasks(features, data.split.test).to(device)
    described = described_tasks(len(train_tasks), cfg.base.descriptor_fraction, cfg.base.seed).to(device)

    def build(folder):
        start = time.perf_counter()
        model = HyperClip.create(finetuned["train"].weights.shape[1], h.hidden, train_tasks.text.shape[1],
                                 Standardizer.fit(finetuned["train"].weights), torch.Generator().manual_seed(cfg.base.seed))
        model.params = {k: v.to(device).requires_grad_(True) for k, v in model.params.items()}
        history = train_hyperclip(model, finetuned["train"], train_tasks.text, described.nonzero().flatten(), h.epochs, h.lr,
                                  h.batch, h.logit_scale, cfg.base.seed)
        history["train_s"] = time.perf_counter() - start
        torch.save({"params": {k: v.detach().cpu() for k, v in model.params.items()},
                    "mean": model.scale.mean.cpu(), "std": model.scale.std.cpu()}, folder / "hyperclip.pt")
        atomic_write_json(folder / "history.json", history)

    folder = store.ensure("hyperclip", key, build)
    state = torch.load(folder / "hyperclip.pt", map_location=device, weights_only=True)
    model = HyperClip(state["params"], Standardizer(state["mean"], state["std"]))
    history = json.loads((folder / "history.json").read_text())

    start = time.perf_counter()
    trajectory, per_step = {"step": [], "cosine": [], "zero_shot": []}, []
    all_tasks = torch.arange(len(test_tasks), device=device)

    def on_step(k, z, cosine):
        with torch.no_grad():
            acc = weights_accuracy(family, generator.decode(z), test_tasks, all_tasks)
        trajectory["step"].append(k)
        trajectory["cosine"].append(cosine.mean().item())
        trajectory["zero_shot"].append(acc.mean().item())
        per_step.append(acc)

    z_start = generator.start(len(test_tasks), torch.Generator().manual_seed(cfg.base.seed)).to(device)
    guide(generator, model, test_tasks.text, z_start, h.guidance_steps, h.guidance_lambda, h.guidance_lr,
          h.guidance_optimizer, on_step)
    n_query = (test_tasks.n_samples - test_tasks.n_support).double()
    rows = described[finetuned["train"].task]
    seen_set = FineTuned(finetuned["train"].task[rows], finetuned["train"].latent[rows], finetuned["train"].weights[rows])
    record = {
        "method": GUIDANCE_METHODS[name], "profile": cfg.profile, "seed": cfg.base.seed,
        "descriptor_fraction": cfg.base.descriptor_fraction,
        "zero_shot": summarize_accuracy(per_step[-1], n_query),
        "unguided_zero_shot": summarize_accuracy(per_step[0], n_query),
        "task_inference": {"held-out (meta-test)": task_inference(model, finetuned["test"], test_tasks.text),
                           "meta-train": task_inference(model, seen_set, train_tasks.text)},
        "trajectory": trajectory,
        "per_task": {q: {"zero_shot": z, "unguided": u, "n_query": n} for q, z, u, n in zip(
            test_tasks.questions, per_step[-1].tolist(), per_step[0].tolist(), n_query.tolist())},
        "guidance": {k: getattr(h, k) for k in ("guidance_steps", "guidance_lambda", "guidance_lr", "guidance_optimizer")},
        "config_hash": config_hash({**key, "hyperclip": vars(h)}), "train_s": history["train_s"],
        "guidance_s": time.perf_counter() - start, "versions": package_versions(),
    }
    return GuidanceResult(record, history, model, generator, finetuned)


def run_guidance_rows(cfg, data, features, generators=("HNet", "HVAE"), seeds=(0,), descriptor_fractions=(1.0,),
                      results_dir=None, store=None) -> list[GuidanceResult]:
    """Both HyperCLIP-guidance rows of Table 1 for every seed and descriptor share; records also go to
    `results_dir` when given."""
    from .baselines import save_record
    from .config import run_configs
    out = []
    for name in generators:
        for run_cfg in run_configs(cfg, seeds, descriptor_fractions):
            result = run_hyperclip_guidance(run_cfg, name, data, features, store)
            if results_dir is not None:
                save_record(result.record, results_dir)
            out.append(result)
    return out
