"""The prepared GPU check: the rehearsal's stages (hyperclip_lib/rehearsal.py: the authors' real split, stand-in
768-d features) at `paper` sizes on CUDA, each for a bounded number of steps, timed, with its peak memory.

    .venv/bin/python benchmarks/gpu_check.py                                  # a GPU: ~5 min on one H100/H200
    .venv/bin/python benchmarks/gpu_check.py --profile ci --tasks 24 --device cpu --out /tmp/check   # a CPU smoke run

Stages: every Table 1 baseline (one epoch, scored zero- and few-shot), the fine-tuned sets of HNet and MNet
(2 per task), the HVAE (2 epochs), CLIP_H (2 epochs) and guidance, and the paper-size HyperLDM (1.15 B
parameters at `paper`: `--ldm-steps` training steps, then one sample per meta-test task with DDPM over all 350
steps and with SDE-DPM-Solver++ at 20). Writes `gpu_check_<device>_<profile>.txt` (the table) and `.json` to `--out`
(default benchmarks/results/). Accuracies on stand-in features mean nothing and are not written.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from hyperclip_lib import numerics
from hyperclip_lib.config import get_config
from hyperclip_lib.models.families import RECIPES
from hyperclip_lib.models.hyperldm import ldm_sampler, sample
from hyperclip_lib.rehearsal import ONE_EPOCH, prepare
from hyperclip_lib.splitstats import authors_split_dir
from hyperclip_lib.stages.baselines import run_baseline
from hyperclip_lib.stages.data import ensure_data, ensure_features
from hyperclip_lib.stages.generators import FINETUNE_SOURCE, ensure_finetuned, ensure_hvae
from hyperclip_lib.stages.guidance import run_hyperclip_guidance
from hyperclip_lib.stages.hyperldm import ensure_ldm
from hyperclip_lib.store import ArtifactStore
from hyperclip_lib.taskdata import TaskTensors

RESULTS = Path(__file__).resolve().parent / "results"
BOUNDED = {**ONE_EPOCH, "generator.finetune_per_task": 2, "generator.hvae_epochs": 2, "hyperclip.epochs": 2}


class Meter:
    """Seconds and peak memory (GPU: allocated by torch; CPU: the process's resident peak so far) per stage."""

    def __init__(self, device: str):
        self.device, self.rows = device, []

    def __call__(self, stage: str, fn, **extra):
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() if cuda else
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
        self.rows.append({"stage": stage, "seconds": round(seconds, 2), "peak_gib": round(peak, 2), **extra})
        print(f"{stage:34s} {seconds:8.1f} s  {peak:6.2f} GiB  {extra or ''}", flush=True)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tasks", type=int, default=None, help="only the first N meta-train tasks (default: all 870)")
    ap.add_argument("--ldm-steps", type=int, default=30, help="HyperLDM training steps timed (default 30)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    numerics.apply(1)
    meta_dir = authors_split_dir()
    if meta_dir is None:
        raise SystemExit("the authors' split (shared/data/metavqa-authors) is not beside the repository")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    overrides = {**BOUNDED, **prepare(work, meta_dir, args.tasks), "encoder.device": args.device,
                 "base.device": args.device, "ldm.steps": args.ldm_steps}
    cfg = get_config(args.profile, overrides)
    store = ArtifactStore(work / "artifacts")
    meter = Meter(args.device)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    print(f"GPU check, profile {args.profile}, {name}, torch {torch.__version__}, inputs in {work}", flush=True)

    data = meter("data", lambda: ensure_data(cfg, store))
    features = meter("features (from the stand-in file)", lambda: ensure_features(cfg, store, data))
    for method in RECIPES:
        meter(f"baseline: {method}", lambda: run_baseline(cfg, method, data, features, store),
              epochs=getattr(cfg, RECIPES[method].section).epochs)
    for source in sorted(set(FINETUNE_SOURCE.values())):
        meter(f"fine-tuned set: {source}", lambda: ensure_finetuned(cfg, source, data, features, store),
              per_task=cfg.generator.finetune_per_task)
    meter("HVAE", lambda: ensure_hvae(cfg, data, features, store), epochs=cfg.generator.hvae_epochs)
    meter("CLIP_H + guidance (HVAE)", lambda: run_hyperclip_guidance(cfg, "HVAE", data, features, store),
          epochs=cfg.hyperclip.epochs)
    ldm = meter("HyperLDM training (HVAE)", lambda: ensure_ldm(cfg, "HVAE", data, features, store),
                steps=cfg.ldm.steps)
    params = sum(p.numel() for p in ldm.net.parameters())
    meter.rows[-1].update(parameters=params, steps_per_s=round(cfg.ldm.steps / meter.rows[-1]["seconds"], 2))
    test = TaskTensors.from_tasks(features, data.split.test).to(args.device)
    gamma = torch.full((len(test),), 1.5, device=args.device)
    for sampler in ("ddpm", "sde-dpmsolver++"):
        scheduler, steps = ldm_sampler(cfg.ldm, sampler)
        meter(f"HyperLDM sampling: {sampler}", lambda: sample(ldm, test.text, gamma, scheduler, steps,
                                                              torch.Generator().manual_seed(0)),
              latents=len(test), steps=steps or cfg.ldm.train_steps)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu_check_{'cuda' if args.device.startswith('cuda') else 'cpu'}_{args.profile}"
    header = {"device": name, "profile": args.profile, "torch": torch.__version__, "tasks": len(data.split.train),
              "numerics": numerics.identity(), "at": time.strftime("%Y-%m-%d %H:%M")}
    stem.with_suffix(".json").write_text(json.dumps({**header, "stages": meter.rows}, indent=1))
    lines = [f"# {header}", f"{'stage':34s} {'seconds':>8s} {'peak GiB':>9s}  extra"]
    lines += [f"{r['stage']:34s} {r['seconds']:8.1f} {r['peak_gib']:9.2f}  "
              + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("stage", "seconds", "peak_gib"))
              for r in meter.rows]
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"total {sum(r['seconds'] for r in meter.rows) / 60:.1f} min; wrote {stem}.txt and .json")


if __name__ == "__main__":
    main()
