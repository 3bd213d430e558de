"""Full DDPM sampling (every diffusion step) against the fewer-step DDIM sampler on a trained HyperLDM.

    .venv/bin/python benchmarks/bench_sampling.py               # the quick HVAE HyperLDM (cached by notebook 05)
    .venv/bin/python benchmarks/bench_sampling.py --generator HNet

Uses the `quick` HyperLDM from the artifact cache; when that is absent it trains one on the spot at the
`ci` size instead (and says so). Both samplers draw `samples_per_task` networks for every meta-test task
and every γ of the grid in one batch; the script times each, scores the decoded networks zero-shot, and
ends with `speedup: <ratio>x, accuracy change: <points> points` (DDIM minus DDPM, task mean over γ).
"""
from __future__ import annotations

import argparse
import time

import torch

from hyperclip_lib.config import get_config
from hyperclip_lib.models.hyperldm import ldm_scheduler
from hyperclip_lib.stages.baselines import adapter_scorer
from hyperclip_lib.stages.data import prepare
from hyperclip_lib.stages.hyperldm import ldm_key, per_gamma_task_mean, run_hyperldm, sample_and_score
from hyperclip_lib.store import ArtifactStore
from hyperclip_lib.taskdata import TaskTensors


def quick_ldm_is_cached(cfg, name: str, data, features, store: ArtifactStore) -> bool:
    return store.path("hyperldm", ldm_key(cfg, name, data, features)).exists()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="HVAE", choices=["HNet", "HVAE"])
    ap.add_argument("--ddim-steps", default=None,
                    help="comma-separated DDIM step counts to compare (default: the profile's ldm.ddim_steps); "
                         "the last line reports the first")
    args = ap.parse_args()

    store = ArtifactStore()
    cfg = get_config("quick")
    quick = prepare(cfg) if (store.root / "features").exists() else None
    if quick is None or not quick_ldm_is_cached(cfg, args.generator, quick["data"], quick["features"], store):
        print("no cached quick HyperLDM: training one at the ci size now (run notebook 05 in quick for the real one)")
        cfg = get_config("ci")
    prepared = prepare(cfg)
    data, features = prepared["data"], prepared["features"]
    result = run_hyperldm(cfg, args.generator, data, features, store)
    L = cfg.ldm
    gammas = list(L.gammas)
    tasks = TaskTensors.from_tasks(features, data.split.test)
    scorer = adapter_scorer(cfg, features)
    ddim_steps = [int(k) for k in args.ddim_steps.split(",")] if args.ddim_steps else [L.ddim_steps]
    print(f"{args.generator} + HyperLDM ({cfg.profile}): {len(tasks)} meta-test tasks x {len(gammas)} γ x "
          f"{L.samples_per_task} samples = {len(tasks) * len(gammas) * L.samples_per_task} networks per sampler, "
          f"{torch.get_num_threads()} threads")
    scores = {}
    for kind, steps in [("ddpm", None)] + [("ddim", k) for k in ddim_steps]:
        scheduler = ldm_scheduler(L, kind)
        start = time.perf_counter()
        out = sample_and_score(result.ldm, result.weight_gen, scorer, tasks, gammas, L.samples_per_task,
                               scheduler, steps, cfg.base.seed)
        seconds = time.perf_counter() - start
        by_gamma = {g: acc.mean().item() for g, acc in per_gamma_task_mean(out, gammas, len(tasks)).items()}
        scores[steps] = (seconds, sum(by_gamma.values()) / len(by_gamma))
        print(f"{kind:4s} {steps or L.train_steps:4d} steps: {seconds:7.1f} s; zero-shot by γ: "
              + ", ".join(f"{g:g}: {a:.2f}" for g, a in by_gamma.items()) + f"; mean {scores[steps][1]:.2f}", flush=True)
    (t_ddpm, a_ddpm) = scores[None]
    for k in ddim_steps[1:]:
        print(f"DDIM {k} steps vs DDPM: {t_ddpm / scores[k][0]:.1f}x faster, {scores[k][1] - a_ddpm:+.2f} points")
    t_ddim, a_ddim = scores[ddim_steps[0]]
    print(f"speedup: {t_ddpm / t_ddim:.1f}x, accuracy change: {a_ddim - a_ddpm:+.2f} points")


if __name__ == "__main__":
    main()
