"""Unconditional generators h(z) → W, and the principal directions of a set of latents.

Both generators of the paper look alike to guidance, HyperLDM and the widgets: a latent size, a decoder
to adapter weights, and a starting point for guidance (z⁰ for the HNet, z ~ N(0, I) for the HVAE,
Algorithm 11).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .families import Family
from .hvae import HVAE


@dataclass
class LatentGenerator:
    name: str
    latent_dim: int
    decode: Callable[[torch.Tensor], torch.Tensor]
    z0: torch.Tensor | None = None

    def start(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        if self.z0 is not None:
            return self.z0.detach().expand(n, -1).clone()
        return torch.randn(n, self.latent_dim, generator=rng)


def hnet_generator(family: Family, params: dict) -> LatentGenerator:
    """The hypernetwork and meta-learned z⁰ of Uncond. HNet-MAML (paper §2.3)."""
    return LatentGenerator("HNet", params["z0"].shape[-1], lambda z: family.weights(params, z), params["z0"])


def hvae_generator(vae: HVAE) -> LatentGenerator:
    return LatentGenerator("HVAE", vae.latent_dim, vae.decode)


def principal_directions(latents: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean [Z], the top-k principal directions [k, Z] and the spread (s.d.) along each [k] (exact SVD)."""
    latents = torch.as_tensor(latents, dtype=torch.float32)
    mean = latents.mean(0)
    _, s, v = torch.linalg.svd(latents - mean, full_matrices=False)
    k = min(k, v.shape[0])
    return mean, v[:k], s[:k] / max(1, len(latents) - 1) ** 0.5
