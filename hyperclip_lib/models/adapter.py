"""The base model f(x, W): a CLIP-Adapter as a function of one flat weight vector W.

out = x + W2·ReLU(W1·x + b1) + b2, L2-normalised; logits = 100 · cosine(out, answer-prompt
embeddings). Keeping W flat lets adaptation loops, hypernetworks and weight encoders all speak
the same "weights as data" language.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOGIT_SCALE = 100.0   # fixed, as in the authors' release


@dataclass(frozen=True)
class AdapterSpec:
    dim: int
    hidden: int

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W1": (self.hidden, self.dim), "b1": (self.hidden,), "W2": (self.dim, self.hidden), "b2": (self.dim,)}

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def unflatten(self, W: torch.Tensor) -> dict[str, torch.Tensor]:
        if W.shape[-1] != self.n_params:
            raise ValueError(f"weight vector has {W.shape[-1]} entries; AdapterSpec{self.dim, self.hidden} "
                             f"needs {self.n_params}")
        # One split (not four slices): its backward is a single concatenation, not four zero-filled
        # full-length gradients summed, which matters inside second-order inner loops.
        parts = W.split([math.prod(s) for s in self.shapes.values()], dim=-1)
        return {name: part.reshape(*W.shape[:-1], *shape)
                for (name, shape), part in zip(self.shapes.items(), parts)}

    def init(self, generator: torch.Generator | None = None, zero_residual: bool = True) -> torch.Tensor:
        """Kaiming-uniform W1 (scale 1/sqrt(fan_in)); W2 zero by default, so f starts as plain CLIP."""
        W1 = (torch.rand(self.hidden, self.dim, generator=generator) * 2 - 1) / math.sqrt(self.dim)
        W2 = torch.zeros(self.dim, self.hidden) if zero_residual else \
            (torch.rand(self.dim, self.hidden, generator=generator) * 2 - 1) / math.sqrt(self.hidden)
        return torch.cat([W1.flatten(), torch.zeros(self.hidden), W2.flatten(), torch.zeros(self.dim)])


def adapter_features(x: torch.Tensor, W: torch.Tensor, spec: AdapterSpec,
                     film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x [..., n, D] -> adapted, L2-normalised features. `film` = (scale, shift) [..., H] modulates the
    hidden pre-activation (FiLM, Perez et al. 2017) for the Cond. Multitask FiLM baseline."""
    p = spec.unflatten(W)
    pre = x @ p["W1"].transpose(-1, -2) + p["b1"].unsqueeze(-2)
    if film is not None:
        pre = film[0].unsqueeze(-2) * pre + film[1].unsqueeze(-2)
    out = x + F.relu(pre) @ p["W2"].transpose(-1, -2) + p["b2"].unsqueeze(-2)
    return F.normalize(out, dim=-1)


def adapter_logits(x: torch.Tensor, W: torch.Tensor, spec: AdapterSpec, answer_emb: torch.Tensor,
                   film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[..., n, A] logits of images x [..., n, D] against answer-prompt embeddings [..., A, D]."""
    return LOGIT_SCALE * adapter_features(x, W, spec, film) @ F.normalize(answer_emb, dim=-1).transpose(-1, -2)


def clip_logits(x: torch.Tensor, answer_emb: torch.Tensor) -> torch.Tensor:
    """CLIP as base model: no adapter, cosine of image and prompt embeddings."""
    return LOGIT_SCALE * F.normalize(x, dim=-1) @ F.normalize(answer_emb, dim=-1).transpose(-1, -2)


def scaled_text(e: torch.Tensor) -> torch.Tensor:
    """An L2-normalised text embedding [.., E] times √E, so its entries have unit variance: how every
    task-conditioned network (Cond. Multitask/HNet-MAML, FiLM, HyperLDM) receives a task's question."""
    return e * math.sqrt(e.shape[-1])
