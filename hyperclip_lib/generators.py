"""Unconditional generative hypernetworks h(z) → W and the fine-tuned-weights datasets behind them.

* **HNet**: the hypernetwork and meta-learned z⁰ of Uncond. HNet-MAML (paper §2.3, A.6.1).
* **HVAE**: a VAE over fine-tuned adapter weights (Algorithm 8): encoder P → 512 → 256 → (μ, log σ²) of a
  32-d latent, decoder mirrored, Kaiming init; weights are standardised per dimension first.
* **Fine-tuned datasets**: many (task, adapted z or W, question embedding) samples, each from an
  adaptation on a random support split of a task — 50 steps from the HNet's z⁰ (lr 0.1, adapting z) or
  from the MNet-MAML initialisation (lr 0.01, adapting W). HyperCLIP and HyperLDM reuse them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import BaseModelConfig
from .meta import adapt
from .methods import Family, kaiming, task_accuracies
from .taskdata import TaskTensors


@dataclass
class FineTuned:
    """Adapted networks: row m came from task `task[m]` of its split."""
    task: torch.Tensor      # [M]
    latent: torch.Tensor    # [M, Z] the adapted variable (z for the HNet, W itself for the MNet)
    weights: torch.Tensor   # [M, P] the adapter weights it gives

    def to_dict(self) -> dict:
        return {"task": self.task, "latent": self.latent, "weights": self.weights}


def finetune_dataset(family: Family, params: dict, tasks: TaskTensors, per_task: int, steps: int, lr: float,
                     base: BaseModelConfig, seed: int, random_splits: bool = True,
                     desc: str = "fine-tune") -> FineTuned:
    """`per_task` adaptations of every task, batched over tasks. With `random_splits`, each adapts on a
    fresh random 70% of the task's data (as training tasks, A.6); otherwise on the fixed support set."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(tasks)).repeat(per_task)
    task, latent, weights = [], [], []
    for idx in tqdm(rows.split(base.eval_tasks), desc=desc, leave=False):
        batch = (tasks.sample_batch(idx, None, base.support_fraction, generator) if random_splits
                 else tasks.fixed_batch(idx))
        with torch.no_grad():
            phi0 = family.start(params, batch)
        phi = adapt(family, params, phi0.detach(), batch, steps, lr).detach()
        with torch.no_grad():
            latent.append(phi)
            weights.append(family.weights(params, phi))
        task.append(idx)
    return FineTuned(torch.cat(task), torch.cat(latent), torch.cat(weights))


def weights_accuracy(spec_family: Family, weights: torch.Tensor, tasks: TaskTensors, task: torch.Tensor,
                     chunk: int = 256) -> torch.Tensor:
    """Query accuracy (%) of adapter weights `weights[m]` on task `task[m]`'s fixed query set."""
    from .adapter import adapter_logits
    from .methods import masked_logits
    out = []
    for rows in torch.arange(len(task)).split(chunk):
        batch = tasks.fixed_batch(task[rows])
        with torch.no_grad():
            logits = masked_logits(adapter_logits(batch.x, weights[rows], spec_family.spec, batch.answers),
                                   batch.answer_mask)
            out.append(task_accuracies(logits, batch.labels, batch.query))
    return torch.cat(out)


class Standardizer:
    """Per-dimension standardisation with statistics from a training set (kept with the model)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean, std

    @staticmethod
    def fit(x: torch.Tensor, eps: float = 1e-6) -> "Standardizer":
        return Standardizer(x.mean(0), x.std(0).clamp(min=eps))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def mlp_params(prefix: str, sizes: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        out[f"{prefix}.{i}.W"] = kaiming(fan_out, fan_in, generator)
        out[f"{prefix}.{i}.b"] = torch.zeros(fan_out)
    return out


def mlp(params: dict, prefix: str, x: torch.Tensor, activation=F.relu) -> torch.Tensor:
    """Linear layers `prefix.i` with `activation` between them (none after the last)."""
    n = sum(1 for k in params if k.startswith(prefix + ".") and k.endswith(".W"))
    for i in range(n):
        x = x @ params[f"{prefix}.{i}.W"].T + params[f"{prefix}.{i}.b"]
        if i < n - 1:
            x = activation(x)
    return x


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per row, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


@dataclass
class HVAE:
    """A VAE over standardised adapter weights; `decode` returns adapter weights W."""
    params: dict
    scale: Standardizer
    latent_dim: int

    @staticmethod
    def create(n_weights: int, hidden: tuple[int, int], latent: int, scale: Standardizer,
               generator: torch.Generator) -> "HVAE":
        h1, h2 = hidden
        params = {**mlp_params("enc", [n_weights, h1, h2, 2 * latent], generator),
                  **mlp_params("dec", [latent, h2, h1, n_weights], generator)}
        return HVAE(params, scale, latent)

    def encode(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = mlp(self.params, "enc", self.scale(W)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale.inverse(mlp(self.params, "dec", z))

    def elbo_terms(self, W: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-row negative log-likelihood (unit-variance Gaussian on standardised weights, up to a
        constant) and KL to the prior; the negative ELBO is their sum."""
        mu, logvar = self.encode(W)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device) if generator is not None else torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        recon = mlp(self.params, "dec", z)
        nll = 0.5 * (recon - self.scale(W)).pow(2).sum(-1)
        return {"nll": nll, "kl": gaussian_kl(mu, logvar)}
