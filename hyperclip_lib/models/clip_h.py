"""HyperCLIP (paper §4, Algorithm 1) and HyperCLIP guidance (Eq. 4, Algorithm 11).

CLIP_H maps flattened adapter weights W to the text-embedding space of the frozen encoder: one hidden
tanh layer (A.2) over per-dimension standardised weights. It is trained with open_clip's own symmetric
contrastive `ClipLoss` (as the world CLIP) against the questions of the tasks the weights were fine-tuned
on, with a learnt temperature as CLIP's (log-parametrised, clamped at a logit scale of 100). Guidance then moves a generator's latent z to raise
cos(CLIP_H(h(z)), CLIP_T(t_i)), with a penalty λ‖z − z_start‖ keeping it near where it started.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from ..config import HyperClipConfig
from ..maml import FineTuned
from ..taskdata import row_chunks
from .hvae import Linear, Standardizer
from .latent import LatentGenerator


class HyperClip(nn.Module):
    """CLIP_H: weights W (per-dimension standardised by `scale`) → one tanh hidden layer → text space."""

    def __init__(self, scale: Standardizer, hidden: int, text_dim: int, generator: torch.Generator | None = None,
                 logit_scale: float = 1 / 0.07):
        super().__init__()
        self.scale = scale
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        # Kaiming's ReLU gain of √2 removed from the first layer: the hidden layer is tanh.
        self.net = nn.Sequential(Linear(scale.n_coordinates, hidden, generator, gain=0.5 ** 0.5), nn.Tanh(),
                                 Linear(hidden, text_dim, generator))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()

    def embed(self, W: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP_H(W) [.., E]."""
        return F.normalize(self.net(self.scale(W)), dim=-1)

    @staticmethod
    def from_state_dict(state: dict, hidden: int) -> "HyperClip":
        model = HyperClip(Standardizer(state["scale.mean"], state["scale.std"]), hidden, state["net.2.weight"].shape[0])
        model.load_state_dict(state)
        return model.eval()


def contrastive_loss(weight_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (weights, question) pairs: open_clip's ClipLoss."""
    return ClipLoss()(weight_emb, F.normalize(text_emb, dim=-1), logit_scale)


def train_hyperclip(model: HyperClip, data: FineTuned, text: torch.Tensor, tasks: torch.Tensor, h: HyperClipConfig,
                    seed: int) -> dict:
    """Adam on CLIP_H (Algorithm 1). An epoch is one pass over `tasks` (indices of described tasks) in
    batches of distinct tasks, one random fine-tuned network of each, so no batch holds two networks of
    one task as false negatives. `text[t]` is task t's question embedding."""
    rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=h.lr)
    rows_of = {int(t): torch.nonzero(data.task == t).flatten() for t in tasks}
    history = {"step": [], "loss": [], "logit_scale": []}
    for _ in tqdm(range(h.epochs), desc="HyperCLIP", leave=False):
        for idx in tasks[torch.randperm(len(tasks), generator=rng)].split(h.batch):
            if len(idx) < 2:
                continue
            rows = torch.stack([rows_of[int(t)][torch.randint(len(rows_of[int(t)]), (1,), generator=rng)]
                                for t in idx]).flatten()
            loss = contrastive_loss(model.embed(data.weights[rows]), text[data.task[rows]], model.logit_scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.log_logit_scale.clamp_(0, math.log(100))
            history["step"].append(len(history["step"]) + 1)
            history["loss"].append(loss.item())
            history["logit_scale"].append(model.logit_scale.item())
    return history


def similarity(model: HyperClip, weights: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[networks, questions] cosine similarity of CLIP_H(W) and the question embeddings."""
    with torch.no_grad():
        return model.embed(weights) @ F.normalize(text, dim=-1).T


def task_inference(model: HyperClip, data: FineTuned, text: torch.Tensor, k: int = 5,
                   rows: torch.Tensor | None = None) -> dict[str, float]:
    """Fig. 3: for each fine-tuned network (`rows` of `data`, default all), is its own task's question the most
    similar of all candidate questions (`text`, one per task of its split)? Top-1 and top-k accuracy (%)
    against chance. Networks are read in row chunks, so a large set is never copied whole."""
    rows = torch.arange(len(data.task), device=data.task.device) if rows is None else rows
    rank = []
    for part in row_chunks(len(rows), data.weights.shape[1]):
        idx = rows[part.to(rows.device)]
        sim = similarity(model, data.weights[idx], text)
        rank.append((sim > sim.gather(1, data.task[idx][:, None])).sum(1))
    rank = torch.cat(rank)
    n = text.shape[0]
    return {"top1": 100 * (rank == 0).float().mean().item(), f"top{k}": 100 * (rank < k).float().mean().item(),
            "chance top1": 100 / n, f"chance top{k}": 100 * min(k, n) / n, "candidates": n}


def guide(weight_gen: LatentGenerator, model: HyperClip, text: torch.Tensor, z_start: torch.Tensor, steps: int,
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
        cosine = (model.embed(weight_gen.decode(z)) * target).sum(-1)
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
