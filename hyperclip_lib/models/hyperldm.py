"""HyperLDM (paper §5, A.6.3): a latent diffusion model over generator latents, conditioned on the
question embedding, sampled with classifier-free guidance (Eq. 10).

The noise schedule and the sampling step are diffusers' schedulers over one β schedule (linear from 1e-4
to 0.06 over 350 steps in the paper): DDPM's ancestral step (σ_t² = β̃_t, diffusers' "fixed_small"), DDIM,
and the multistep solvers DPM-Solver++ (deterministic or SDE) and UniPC. The network ε_ψ(z_t, t, e) is
separate: a residual MLP with squeeze-and-excitation, a 150-d sinusoidal time embedding concatenated with e
at the input and at every hidden block. Classifier-free
guidance ε̃ = (1−γ)·ε(z_t, t, 0) + γ·ε(z_t, t, e) comes from one batched forward pass over both halves.
Sampling always uses the EMA copy of the network.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from tqdm.auto import tqdm

from ..config import LDMConfig
from .adapter import scaled_text
from .hvae import Standardizer


# Each sampler and its default number of network evaluations (None: every training step).
SAMPLER_STEPS: dict[str, int | None] = {
    "ddpm": None,              # ancestral, stochastic
    "ddim": 35,                # first order, deterministic (the probability-flow ODE)
    "dpmsolver++": 20,         # DPM-Solver++(2M): second-order multistep, deterministic
    "sde-dpmsolver++": 20,     # SDE-DPM-Solver++(2M): second-order multistep, fresh noise every step
    "unipc": 20,               # UniPC (bh2), second-order predictor-corrector, deterministic
}


def make_scheduler(kind: str, train_steps: int, beta_start: float, beta_end: float, schedule: str = "linear"):
    """A diffusers scheduler of sampler `kind` (a key of SAMPLER_STEPS) over one β schedule."""
    betas = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
    if schedule not in betas:
        raise ValueError(f"ldm.schedule is {schedule!r}; expected 'linear' or 'cosine'")
    common = dict(num_train_timesteps=train_steps, beta_start=beta_start, beta_end=beta_end,
                  beta_schedule=betas[schedule], prediction_type="epsilon")
    if kind == "ddpm":
        return DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small")
    if kind == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    if kind in ("dpmsolver++", "sde-dpmsolver++"):
        return DPMSolverMultistepScheduler(**common, algorithm_type=kind, solver_order=2)
    if kind == "unipc":
        return UniPCMultistepScheduler(**common, solver_order=2)
    raise ValueError(f"ldm.sampler is {kind!r}; expected one of {', '.join(SAMPLER_STEPS)}")


def ldm_sampler(ldm_cfg: LDMConfig, kind: str | None = None, steps: int | None = None):
    """(scheduler, steps) of an `ldm` config section: its sampler and `sampler_steps` (None: that sampler's
    default), unless `kind` / `steps` name others."""
    kind = kind or ldm_cfg.sampler
    scheduler = make_scheduler(kind, ldm_cfg.train_steps, ldm_cfg.beta_start, ldm_cfg.beta_end, ldm_cfg.schedule)
    if steps is None and kind == ldm_cfg.sampler:
        steps = ldm_cfg.sampler_steps
    return scheduler, steps if steps is not None else SAMPLER_STEPS[kind]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of integer timesteps (Vaswani et al.; DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


class SEResidualBlock(nn.Module):
    """h ↦ h' + skip(h): h' = SE(Linear(SiLU(Linear([h, t_emb, e])))), SE a sigmoid gate per unit."""

    def __init__(self, width_in: int, width: int, extra: int, reduction: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(width_in + extra, width)
        self.fc2 = nn.Linear(width, width)
        self.se = nn.Sequential(nn.Linear(width, max(1, width // reduction)), nn.ReLU(),
                                nn.Linear(max(1, width // reduction), width), nn.Sigmoid())
        self.skip = nn.Identity() if width_in == width else nn.Linear(width_in, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        out = self.fc2(F.silu(self.fc1(torch.cat([h, extra], dim=-1))))
        return self.norm(self.skip(h) + out * self.se(out))


class HyperLDMNet(nn.Module):
    """ε_ψ(z_t, t, e) for latents of size `latent_dim` and conditions of size `cond_dim`."""

    def __init__(self, latent_dim: int, cond_dim: int, widths: tuple[int, ...], time_dim: int = 150):
        super().__init__()
        self.time_dim = time_dim
        extra = time_dim + cond_dim
        self.input = nn.Linear(latent_dim + extra, widths[0])
        self.blocks = nn.ModuleList(SEResidualBlock(w_in, w, extra) for w_in, w in zip((widths[0],) + widths[:-1], widths))
        self.output = nn.Linear(widths[-1], latent_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """`e`: the L2-normalised question embedding, or zeros for the null condition."""
        extra = torch.cat([timestep_embedding(t, self.time_dim), scaled_text(e)], dim=-1)
        h = F.silu(self.input(torch.cat([z, extra], dim=-1)))
        for block in self.blocks:
            h = block(h, extra)
        return self.output(h)


def guided_noise(net: nn.Module, z: torch.Tensor, t: torch.Tensor, e: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Eq. 10 in one forward pass: rows [unconditional; conditional], then (1−γ)·ε_u + γ·ε_c per row."""
    eps = net(torch.cat([z, z]), torch.cat([t, t]), torch.cat([torch.zeros_like(e), e]))
    eps_u, eps_c = eps.chunk(2)
    gamma = gamma.view(-1, *([1] * (z.dim() - 1)))
    return (1 - gamma) * eps_u + gamma * eps_c


def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            e.lerp_(p, 1 - decay)


def ldm_widths(L: LDMConfig) -> tuple[int, int, int]:
    return (L.width1, L.width2, L.width3)


@dataclass
class TrainedLDM:
    net: nn.Module        # the trained weights
    ema: nn.Module        # their exponential moving average: what sampling uses
    scale: Standardizer   # per-dimension latent statistics of the training set
    history: dict

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "ema": self.ema.state_dict(), "scale": self.scale.state_dict()}

    @staticmethod
    def from_state_dict(state: dict, L: LDMConfig, cond_dim: int, history: dict) -> "TrainedLDM":
        scale = Standardizer(state["scale"]["mean"], state["scale"]["std"])
        nets = []
        for part in ("net", "ema"):
            net = HyperLDMNet(scale.n_coordinates, cond_dim, ldm_widths(L), L.time_dim)
            net.load_state_dict(state[part])
            nets.append(net.eval())
        return TrainedLDM(nets[0], nets[1], scale, history)

    def to(self, device) -> "TrainedLDM":
        return TrainedLDM(self.net.to(device), self.ema.to(device), self.scale.to(device), self.history)


def train_ldm(latents: torch.Tensor, cond: torch.Tensor, described: torch.Tensor, L: LDMConfig, seed: int) -> TrainedLDM:
    """ε-prediction MSE on per-dimension standardised latents, over the DDPM schedule of `L`. A row whose
    task is not `described` always gets the null condition (zeros); described rows get it with
    probability `L.cond_dropout`."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    scheduler, _ = ldm_sampler(L, "ddpm")
    scale = Standardizer.fit(latents)
    x0 = scale(latents)
    net = HyperLDMNet(latents.shape[1], cond.shape[1], ldm_widths(L), L.time_dim).to(latents.device)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=L.lr)
    alphas = scheduler.alphas_cumprod.to(latents.device)
    history = {"step": [], "loss": []}
    for step in tqdm(range(1, L.steps + 1), desc="HyperLDM", leave=False):
        rows = torch.randint(len(x0), (L.batch,), generator=g).to(latents.device)
        t = torch.randint(len(alphas), (L.batch,), generator=g).to(latents.device)
        noise = torch.randn(L.batch, x0.shape[1], generator=g).to(latents.device)
        zt = scheduler.add_noise(x0[rows], noise, t)
        keep = described[rows] & (torch.rand(L.batch, generator=g).to(latents.device) >= L.cond_dropout)
        e = cond[rows] * keep[:, None]
        loss = F.mse_loss(net(zt, t, e), noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), L.grad_clip)
        opt.step()
        update_ema(ema, net, L.ema_decay)
        history["step"].append(step)
        history["loss"].append(loss.item())
    return TrainedLDM(net, ema, scale, history)


@torch.no_grad()
def sample(ldm: TrainedLDM, cond: torch.Tensor, gamma: torch.Tensor, scheduler, steps: int | None,
           generator: torch.Generator, net: nn.Module | None = None) -> torch.Tensor:
    """Latents [B, Z] for conditions `cond` [B, E] at guidance scales `gamma` [B], in the original latent
    units. `steps`: network evaluations (None: every training step). Uses the EMA network unless `net` given.
    One loop for every sampler; the stochastic ones draw their noise from `generator`."""
    net = ldm.ema if net is None else net
    scheduler.set_timesteps(steps or scheduler.config.num_train_timesteps)
    noise = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    z = torch.randn(cond.shape[0], ldm.scale.n_coordinates, generator=generator).to(cond.device)
    z = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        tt = torch.full((cond.shape[0],), int(t), device=cond.device, dtype=torch.long)
        eps = guided_noise(net, scheduler.scale_model_input(z, int(t)), tt, cond, gamma)
        z = scheduler.step(eps, int(t), z, **noise).prev_sample
    return ldm.scale.inverse(z)
