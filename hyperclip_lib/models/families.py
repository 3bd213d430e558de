"""The model families behind every row of Table 1, in one shape (paper Table 2).

A family maps meta-parameters `params` (a dict of tensors) and a per-task *inner variable* φ to
the base model's logits. Adaptation A_T is gradient descent on φ, so one adaptation loop serves:

    family      φ (what A_T adapts)      weights of task i
    adapter     W                        W                    Uncond. Multitask, MNet-(FO)MAML, CLIP
    hypernet    z (latent, from z⁰)      h(z, θ)              Uncond. HNet-MAML
    cond. hnet  e_i (question embedding) h(e_i, θ)            Cond. Multitask, Cond. HNet-MAML
    film        e_i                      f(·, e_i, W)         Cond. Multitask FiLM

Everything is batched over a leading task axis B; no Python loop runs over tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adapter import AdapterSpec, adapter_logits, scaled_text
from ..taskdata import Batch

MASKED_LOGIT = -1e4   # padded answers: exp() underflows to exactly 0, gradients stay finite


def kaiming(fan_out: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """He-normal init for a ReLU layer (He et al. 2015)."""
    return torch.randn(fan_out, fan_in, generator=generator) * math.sqrt(2.0 / fan_in)


def masked_logits(logits: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~answer_mask.unsqueeze(-2), MASKED_LOGIT)


def task_losses(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] mean cross-entropy of each task over its masked samples."""
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(mask)
    return (ce * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def task_accuracies(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] accuracy (%) of each task over its masked samples."""
    hit = (logits.argmax(-1) == labels).float()
    return 100 * (hit * mask).sum(-1) / mask.sum(-1).clamp(min=1)


class Family:
    spec: AdapterSpec

    def init_params(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def start(self, params: dict, batch: Batch) -> torch.Tensor:
        """φ⁰ of each task in the batch, [B, ...]."""
        raise NotImplementedError

    def weights(self, params: dict, phi: torch.Tensor) -> torch.Tensor:
        """Flat base-model weights W [B, P] for inner variables φ."""
        raise NotImplementedError

    def logits(self, params: dict, phi: torch.Tensor, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        raw = adapter_logits(x, self.weights(params, phi), self.spec, batch.answers)
        return masked_logits(raw, batch.answer_mask)


@dataclass
class AdapterFamily(Family):
    """The adapter's own weights are φ. `zero_residual` starts it as exactly CLIP (the floor)."""
    spec: AdapterSpec
    zero_residual: bool = False

    def init_params(self, generator):
        return {"W": self.spec.init(generator, zero_residual=self.zero_residual)}

    def start(self, params, batch):
        return params["W"].expand(len(batch), -1)

    def weights(self, params, phi):
        return phi


@dataclass
class HyperNetFamily(Family):
    """h(input, θ): one hidden ReLU layer, Kaiming init. Outputs are scaled per tensor by 1/√fan_in
    of the layer they parametrise (NTK parametrisation), so a unit-scale output is a well-scaled W.
    Unconditional: input z, φ⁰ = a learned z⁰ ~ N(0, I). Conditional: input e_i·√E, so its entries
    have unit variance like z's."""
    spec: AdapterSpec
    in_dim: int
    hidden: int
    conditional: bool
    device: str = "cpu"

    def __post_init__(self):
        fan_in = {"W1": self.spec.dim, "b1": self.spec.dim, "W2": self.spec.hidden, "b2": self.spec.hidden}
        self.ntk_scale = torch.cat([torch.full((math.prod(s),), fan_in[k] ** -0.5)
                                    for k, s in self.spec.shapes.items()]).to(self.device)

    def init_params(self, generator):
        params = {"h.W1": kaiming(self.hidden, self.in_dim, generator), "h.b1": torch.zeros(self.hidden),
                  "h.W2": kaiming(self.spec.n_params, self.hidden, generator),
                  "h.b2": torch.zeros(self.spec.n_params)}
        if not self.conditional:
            params["z0"] = torch.randn(self.in_dim, generator=generator)
        return params

    def start(self, params, batch):
        if self.conditional:
            return scaled_text(batch.text)
        return params["z0"].expand(len(batch), -1)

    def weights(self, params, phi):
        hidden = F.relu(phi @ params["h.W1"].T + params["h.b1"])
        return (hidden @ params["h.W2"].T + params["h.b2"]) * self.ntk_scale.to(phi.dtype)


@dataclass
class FiLMFamily(Family):
    """One shared adapter W whose hidden pre-activation is scaled and shifted by a linear map of e_i;
    the map starts at zero, so training starts from the plain adapter."""
    spec: AdapterSpec
    text_dim: int

    def init_params(self, generator):
        return {"W": self.spec.init(generator, zero_residual=False),
                "film.W": torch.zeros(2 * self.spec.hidden, self.text_dim),
                "film.b": torch.zeros(2 * self.spec.hidden)}

    def start(self, params, batch):
        return scaled_text(batch.text)

    def weights(self, params, phi):
        raise TypeError("a FiLM model's weights depend on the task embedding; use logits()")

    def logits(self, params, phi, x, batch):
        scale, shift = (phi @ params["film.W"].T + params["film.b"]).chunk(2, dim=-1)
        raw = adapter_logits(x, params["W"], self.spec, batch.answers, film=(1 + scale, shift))
        return masked_logits(raw, batch.answer_mask)


@dataclass(frozen=True)
class Recipe:
    """How one Table 1 row is trained: its family, whether it sees descriptors, its outer loop."""
    family: str          # "adapter" | "clip" | "hypernet" | "cond_hypernet" | "film"
    conditional: bool
    training: str        # "none" | "multitask" | "maml" | "fomaml"
    section: str         # Config section holding its Table 3 row (CLIP's: only the few-shot lr)


RECIPES: dict[str, Recipe] = {
    "CLIP as base model": Recipe("clip", False, "none", "clip"),
    "Uncond. Multitask": Recipe("adapter", False, "multitask", "multitask"),
    "Uncond. MNet-MAML": Recipe("adapter", False, "maml", "mnet_maml"),
    "Uncond. MNet-FOMAML": Recipe("adapter", False, "fomaml", "mnet_fomaml"),
    "Uncond. HNet-MAML": Recipe("hypernet", False, "maml", "hnet_maml"),
    "Cond. Multitask": Recipe("cond_hypernet", True, "multitask", "cond_multitask"),
    "Cond. Multitask FiLM": Recipe("film", True, "multitask", "film"),
    "Cond. HNet-MAML": Recipe("cond_hypernet", True, "maml", "cond_hnet_maml"),
}


def make_family(recipe: Recipe, spec: AdapterSpec, text_dim: int, hnet_hidden: int, hnet_latent: int,
                device: str = "cpu") -> Family:
    if recipe.family in ("adapter", "clip"):
        return AdapterFamily(spec, zero_residual=recipe.family == "clip")
    if recipe.family == "hypernet":
        return HyperNetFamily(spec, hnet_latent, hnet_hidden, conditional=False, device=device)
    if recipe.family == "cond_hypernet":
        return HyperNetFamily(spec, text_dim, hnet_hidden, conditional=True, device=device)
    if recipe.family == "film":
        return FiLMFamily(spec, text_dim)
    raise ValueError(f"unknown model family {recipe.family!r}")
