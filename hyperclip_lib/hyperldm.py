"""HyperLDM (paper §5, A.6.3): a latent diffusion model over generator latents, conditioned on the
question embedding, sampled with classifier-free guidance (Eq. 10).

The noise schedule and the sampling step are diffusers' `DDPMScheduler` / `DDIMScheduler` (linear β from
1e-4 to 0.06 over 350 steps in the paper; DDPM's ancestral step uses σ_t² = β̃_t, diffusers'
"fixed_small"); the network ε_ψ(z_t, t, e) is separate: a residual MLP with squeeze-and-excitation, a
150-d sinusoidal time embedding concatenated with e at the input and at every hidden block. Classifier-free
guidance ε̃ = (1−γ)·ε(z_t, t, 0) + γ·ε(z_t, t, e) comes from one batched forward pass over both halves.
Sampling always uses the EMA copy of the network.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm


def make_scheduler(kind: str, train_steps: int, beta_start: float, beta_end: float, schedule: str = "linear"):
    """DDPM (ancestral, every step) or DDIM (deterministic, fewer steps) over the same β schedule."""
    betas = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
    if schedule not in betas:
        raise ValueError(f"ldm.schedule is {schedule!r}; expected 'linear' or 'cosine'")
    common = dict(num_train_timesteps=train_steps, beta_start=beta_start, beta_end=beta_end,
                  beta_schedule=betas[schedule], clip_sample=False, prediction_type="epsilon")
    if kind == "ddpm":
        return DDPMScheduler(**common, variance_type="fixed_small")
    if kind == "ddim":
        return DDIMScheduler(**common, set_alpha_to_one=True)
    raise ValueError(f"ldm.sampler is {kind!r}; expected 'ddpm' or 'ddim'")


def ldm_scheduler(ldm_cfg, kind: str | None = None):
    """The scheduler of an `ldm` config section: its sampler unless `kind` names one."""
    return make_scheduler(kind or ldm_cfg.sampler, ldm_cfg.train_steps, ldm_cfg.beta_start, ldm_cfg.beta_end,
                          ldm_cfg.schedule)


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
        extra = torch.cat([timestep_embedding(t, self.time_dim), e], dim=-1)
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


@dataclass
class TrainedLDM:
    net: nn.Module        # the trained weights
    ema: nn.Module        # their exponential moving average: what sampling uses
    mean: torch.Tensor    # per-dimension latent statistics of the training set
    std: torch.Tensor
    history: dict


def train_ldm(latents: torch.Tensor, cond: torch.Tensor, described: torch.Tensor, widths: tuple[int, ...],
              steps: int, batch_size: int, lr: float, cond_dropout: float, ema_decay: float, grad_clip: float,
              scheduler, seed: int, time_dim: int = 150) -> TrainedLDM:
    """ε-prediction MSE on per-dimension standardised latents. A row whose task is not `described` always
    gets the null condition (zeros); described rows get it with probability `cond_dropout`."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = latents.mean(0), latents.std(0).clamp(min=1e-6)
    x0 = (latents - mean) / std
    net = HyperLDMNet(latents.shape[1], cond.shape[1], tuple(widths), time_dim).to(latents.device)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    alphas = scheduler.alphas_cumprod.to(latents.device)
    history = {"step": [], "loss": []}
    for step in tqdm(range(1, steps + 1), desc="HyperLDM", leave=False):
        rows = torch.randint(len(x0), (batch_size,), generator=g).to(latents.device)
        t = torch.randint(len(alphas), (batch_size,), generator=g).to(latents.device)
        noise = torch.randn(batch_size, x0.shape[1], generator=g).to(latents.device)
        zt = scheduler.add_noise(x0[rows], noise, t)
        keep = described[rows] & (torch.rand(batch_size, generator=g).to(latents.device) >= cond_dropout)
        e = cond[rows] * keep[:, None]
        loss = F.mse_loss(net(zt, t, e), noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        update_ema(ema, net, ema_decay)
        history["step"].append(step)
        history["loss"].append(loss.item())
    return TrainedLDM(net, ema, mean, std, history)


@torch.no_grad()
def sample(ldm: TrainedLDM, cond: torch.Tensor, gamma: torch.Tensor, scheduler, steps: int | None,
           generator: torch.Generator, net: nn.Module | None = None) -> torch.Tensor:
    """Latents [B, Z] for conditions `cond` [B, E] at guidance scales `gamma` [B], in the original latent
    units. `steps`: inference steps (None: every training step). Uses the EMA network unless `net` given."""
    net = ldm.ema if net is None else net
    scheduler.set_timesteps(steps or scheduler.config.num_train_timesteps)
    z = torch.randn(cond.shape[0], ldm.mean.shape[0], generator=generator).to(cond.device)
    for t in scheduler.timesteps:
        tt = torch.full((cond.shape[0],), int(t), device=cond.device, dtype=torch.long)
        eps = guided_noise(net, z, tt, cond, gamma)
        z = scheduler.step(eps, int(t), z, generator=generator).prev_sample
    return z * ldm.std + ldm.mean


# --- the cached stage: HNet/HVAE + HyperLDM rows of Table 1 and the γ sweep (Fig. 5A) -------------------

LDM_METHODS = {"HNet": "HNet + HyperLDM", "HVAE": "HVAE + HyperLDM"}


def parse_gammas(text: str, field: str = "ldm.gammas") -> list[float]:
    try:
        return [float(g) for g in str(text).split(",") if g.strip()]
    except ValueError:
        raise ValueError(f"{field} is {text!r}; expected comma-separated numbers like '0,1,1.5'") from None


def generator_latents(cfg, name: str, data, features, store=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [M, Z], task index [M]) of the fine-tuned meta-train networks in `name`'s latent space:
    the HNet's adapted z, or the HVAE encoder's mean of the MNet fine-tuned weights."""
    from .generators import ensure_finetuned, ensure_hvae
    if name == "HNet":
        ft = ensure_finetuned(cfg, "HNet", data, features, store)["train"]
        return ft.latent, ft.task
    vae = ensure_hvae(cfg, data, features, store)[0]
    ft = ensure_finetuned(cfg, "MNet", data, features, store)["train"]
    with torch.no_grad():
        return vae.encode(ft.weights)[0], ft.task


@dataclass
class LDMResult:
    records: list[dict]   # one per γ in the sweep
    ldm: TrainedLDM
    generator: object
    samples: dict         # the sampled latents and their accuracies (see sample_and_score)


def sample_and_score(ldm: TrainedLDM, generator, family, tasks, gammas: list[float], samples_per_task: int,
                     scheduler, steps: int | None, seed: int) -> dict[str, torch.Tensor]:
    """`samples_per_task` latents for every task and every γ, all in one batch; decoded and scored on
    each task's query set. Rows: latents, accuracy (%), task, gamma."""
    from .generators import weights_accuracy
    device = tasks.text.device
    n_tasks = len(tasks)
    rows_task = torch.arange(n_tasks, device=device).repeat(len(gammas) * samples_per_task)
    rows_gamma = torch.tensor(gammas, device=device).repeat_interleave(n_tasks * samples_per_task)
    z = sample(ldm, tasks.text[rows_task], rows_gamma, scheduler, steps, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        acc = weights_accuracy(family, generator.decode(z), tasks, rows_task)
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


TRAIN_FIELDS = ("width1", "width2", "width3", "time_dim", "train_steps", "beta_start", "beta_end", "schedule",
                "steps", "batch", "lr", "cond_dropout", "ema_decay", "grad_clip")


def ldm_key(cfg, name: str, data) -> dict:
    """What a trained HyperLDM depends on (not how it is sampled)."""
    from .generators import finetuned_key
    from .hyperclip import FINETUNE_SOURCE
    return {"generator": name, "finetuned": finetuned_key(cfg, FINETUNE_SOURCE[name], data),
            "generator_cfg": vars(cfg.generator), "ldm": {k: getattr(cfg.ldm, k) for k in TRAIN_FIELDS},
            "descriptor_fraction": cfg.base.descriptor_fraction, "seed": cfg.base.seed}


def run_hyperldm(cfg, name: str, data, features, store=None) -> LDMResult:
    """Train HyperLDM on `name`'s latents (a cached stage; only described tasks carry their condition),
    then sample `samples_per_task` networks per meta-test task for every γ of `ldm.gammas` (of
    `ldm.partial_gammas` when only part of the descriptors is known) in one batch,
    decode and score them zero-shot (cached too, keyed by the sampling settings)."""
    import json
    import time

    from .baselines import build_family, package_versions
    from .hyperclip import load_generator
    from .meta import summarize_accuracy
    from .store import ArtifactStore, atomic_write_json, config_hash
    from .taskdata import TaskTensors, described_tasks
    store = store or ArtifactStore()
    L, device = cfg.ldm, cfg.base.device
    gammas = (parse_gammas(L.gammas) if cfg.base.descriptor_fraction == 1.0
              else parse_gammas(L.partial_gammas, "ldm.partial_gammas"))
    generator = load_generator(cfg, name, data, features, store)
    latents, task = generator_latents(cfg, name, data, features, store)
    train_tasks = TaskTensors.from_tasks(features, data.split.train).to(device)
    test_tasks = TaskTensors.from_tasks(features, data.split.test).to(device)
    described = described_tasks(len(train_tasks), cfg.base.descriptor_fraction, cfg.base.seed).to(device)
    key = ldm_key(cfg, name, data)
    widths = (L.width1, L.width2, L.width3)

    def train_build(folder):
        start = time.perf_counter()
        trained = train_ldm(latents.to(device), train_tasks.text[task.to(device)], described[task.to(device)],
                            widths, L.steps, L.batch, L.lr, L.cond_dropout, L.ema_decay, L.grad_clip,
                            ldm_scheduler(L, "ddpm"), cfg.base.seed,
                            L.time_dim)
        trained.history["train_s"] = time.perf_counter() - start
        torch.save({"net": trained.net.state_dict(), "ema": trained.ema.state_dict(), "mean": trained.mean.cpu(),
                    "std": trained.std.cpu()}, folder / "ldm.pt")
        atomic_write_json(folder / "history.json", trained.history)

    folder = store.ensure("hyperldm", key, train_build)
    state = torch.load(folder / "ldm.pt", map_location=device, weights_only=True)
    nets = []
    for part in ("net", "ema"):
        net = HyperLDMNet(latents.shape[1], train_tasks.text.shape[1], widths, L.time_dim).to(device)
        net.load_state_dict(state[part])
        nets.append(net.eval())
    ldm = TrainedLDM(nets[0], nets[1], state["mean"], state["std"], json.loads((folder / "history.json").read_text()))

    family = build_family(cfg, "Uncond. MNet-MAML", features)
    sample_key = {"model": key, "sampler": L.sampler, "ddim_steps": L.ddim_steps,
                  "samples_per_task": L.samples_per_task, "gammas": gammas}

    def sample_build(folder):
        start = time.perf_counter()
        out = sample_and_score(ldm, generator, family, test_tasks, gammas, L.samples_per_task, ldm_scheduler(L),
                               L.ddim_steps if L.sampler == "ddim" else None, cfg.base.seed)
        torch.save({k: v.cpu() for k, v in out.items()}, folder / "samples.pt")
        atomic_write_json(folder / "timing.json", {"sample_s": time.perf_counter() - start})

    sample_folder = store.ensure("hyperldm_samples", sample_key, sample_build)
    samples = torch.load(sample_folder / "samples.pt", weights_only=True)
    timing = json.loads((sample_folder / "timing.json").read_text())
    n_query = (test_tasks.n_samples - test_tasks.n_support).double().cpu()
    records = []
    for gamma, per_task in per_gamma_task_mean(samples, gammas, len(test_tasks)).items():
        records.append({
            "method": f"{LDM_METHODS[name]} γ={gamma:g}", "profile": cfg.profile, "seed": cfg.base.seed,
            "descriptor_fraction": cfg.base.descriptor_fraction, "gamma": gamma,
            "zero_shot": summarize_accuracy(per_task, n_query),
            "per_task": {q: {"zero_shot": a, "n_query": n} for q, a, n in zip(test_tasks.questions, per_task.tolist(), n_query.tolist())},
            "sampler": L.sampler, "samples_per_task": L.samples_per_task,
            "config_hash": config_hash(sample_key), "train_s": ldm.history["train_s"], "sample_s": timing["sample_s"],
            "versions": package_versions()})
    return LDMResult(records, ldm, generator, samples)


def run_ldm_rows(cfg, data, features, generators=("HNet", "HVAE"), seeds=(0,), descriptor_fractions=(1.0,),
                 results_dir=None, store=None) -> list[LDMResult]:
    """HyperLDM for every generator, seed and descriptor share; every γ's record goes to `results_dir`."""
    from .baselines import save_record
    from .config import run_configs
    out = []
    for name in generators:
        for run_cfg in run_configs(cfg, seeds, descriptor_fractions):
            result = run_hyperldm(run_cfg, name, data, features, store)
            if results_dir is not None:
                for record in result.records:
                    save_record(record, results_dir)
            out.append(result)
    return out
