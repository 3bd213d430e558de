"""Time HyperLDM at the `paper` profile's sizes (widths 8192/16384/8192) on synthetic latents.

    .venv/bin/python benchmarks/paper_ldm_timing.py --device cuda
    .venv/bin/python benchmarks/paper_ldm_timing.py --profile ci --device cpu    # a smoke run

Trains for `--steps` optimiser steps and extrapolates the profile's full schedule, then samples every
meta-test task (373 in Meta-VQA) × the γ grid × samples per task with DDPM (all 350 steps) and with the
profile's sampler (`ldm.sampler`).
Synthetic 32-d latents and 768-d conditions stand in for real ones: only times and memory are meaningful.
"""
from __future__ import annotations

import argparse
import time

import torch

from hyperclip_lib.config import get_config, with_overrides
from hyperclip_lib.models.hyperldm import ldm_sampler, ldm_widths, sample, train_ldm


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps actually run")
    ap.add_argument("--tasks", type=int, default=373)
    args = ap.parse_args()

    cfg = get_config(args.profile)
    L = cfg.ldm
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(870 * cfg.generator.finetune_per_task, 32, generator=g).to(args.device)
    cond = torch.nn.functional.normalize(torch.randn(len(latents), 768, generator=g), dim=-1).to(args.device)
    described = torch.ones(len(latents), dtype=torch.bool, device=args.device)
    widths = ldm_widths(L)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"HyperLDM {args.profile} on {name}: widths {widths}, batch {L.batch}, T = {L.train_steps}, torch {torch.__version__}")
    synchronize(args.device)
    start = time.perf_counter()
    trained = train_ldm(latents, cond, described, with_overrides(cfg, {"ldm.steps": args.steps}).ldm, 0)
    synchronize(args.device)
    per_step = (time.perf_counter() - start) / args.steps
    n_params = sum(p.numel() for p in trained.net.parameters())
    print(f"network: {n_params / 1e6:.0f} M parameters; {per_step * 1e3:.1f} ms per step -> the profile's "
          f"{L.steps} steps take {per_step * L.steps / 60:.1f} min; loss {trained.history['loss'][0]:.3f} -> "
          f"{sum(trained.history['loss'][-20:]) / 20:.3f}")
    ldm = trained
    gammas = list(L.gammas)
    rows = args.tasks * len(gammas) * L.samples_per_task
    text = cond[torch.arange(rows, device=args.device) % len(cond)]
    gamma = torch.tensor(gammas, device=args.device).repeat_interleave(rows // len(gammas) + 1)[:rows]
    for kind in dict.fromkeys(("ddpm", L.sampler)):
        scheduler, steps = ldm_sampler(L, kind)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        synchronize(args.device)
        start = time.perf_counter()
        z = sample(ldm, text, gamma, scheduler, steps, torch.Generator().manual_seed(0))
        synchronize(args.device)
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda") else float("nan")
        print(f"{kind} ({steps or L.train_steps} steps): {rows} latents ({args.tasks} tasks x {len(gammas)} γ x "
              f"{L.samples_per_task}) in {time.perf_counter() - start:.1f} s, finite {bool(torch.isfinite(z).all())}, "
              f"peak {peak:.1f} GiB")


if __name__ == "__main__":
    main()
