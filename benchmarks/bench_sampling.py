"""Diffusion samplers on trained HyperLDMs: full DDPM against DDIM and diffusers' multistep solvers.

    .venv/bin/python benchmarks/bench_sampling.py                  # both quick HyperLDMs (cached by notebook 05)
    .venv/bin/python benchmarks/bench_sampling.py --generators HVAE --samplers ddim:35,sde-dpmsolver++:10:20

Uses the `quick` HyperLDMs from the artifact cache; when one is absent it trains them at the `ci` size instead
(and says so). Every sampler draws `samples_per_task` networks for every meta-test task and every γ of the grid
in one batch, from the same seed; the script times each, scores the decoded networks zero-shot as notebook 05
does, and prints per generator a table: seconds, speed-up over DDPM, task-mean accuracy per γ, its change from
DDPM (mean over the γ grid, and the largest change at any one γ), and the spread of the unconditional (γ = 0)
samples: their per-dimension s.d. over that of the training latents (1 when the sampler reproduces the latent
distribution's width). The profile's sampler from another seed (run first, so it also takes the first-call
costs) measures how much of a change is seed noise.
Ends with `speedup: <ratio>x, accuracy change: <points> points` for the profile's sampler (`ldm.sampler`),
averaged over the generators.
"""
from __future__ import annotations

import argparse
import time

import torch

from hyperclip_lib.config import get_config
from hyperclip_lib.models.hyperldm import SAMPLER_STEPS, ldm_sampler
from hyperclip_lib.stages.baselines import adapter_scorer
from hyperclip_lib.stages.data import encoder_backend, prepare, world_clip_config
from hyperclip_lib.stages.generators import generator_latents
from hyperclip_lib.stages.hyperldm import ldm_key, per_gamma_task_mean, run_hyperldm, sample_and_score
from hyperclip_lib.store import ArtifactStore
from hyperclip_lib.taskdata import TaskTensors

DEFAULT_SAMPLERS = "ddim:35,dpmsolver++:20:50,unipc:20,sde-dpmsolver++:10:20"


def parse_samplers(text: str) -> list[tuple[str, int]]:
    """'ddim:35,sde-dpmsolver++:10:20' -> [('ddim', 35), ('sde-dpmsolver++', 10), ('sde-dpmsolver++', 20)]."""
    out = []
    for item in text.split(","):
        kind, *steps = item.strip().split(":")
        if kind not in SAMPLER_STEPS or kind == "ddpm":
            raise SystemExit(f"--samplers: {kind!r} is not one of {', '.join(k for k in SAMPLER_STEPS if k != 'ddpm')}")
        out += [(kind, int(s)) for s in steps] or [(kind, SAMPLER_STEPS[kind])]
    return out


def cached_ldms(cfg, generators, store: ArtifactStore) -> dict | None:
    """prepare(cfg) when `cfg`'s HyperLDMs for `generators` are all in the cache, else None. Looks for the world
    CLIP first, without building it: that would take most of an hour when only the ci artifacts are there."""
    if encoder_backend(cfg) == "world_clip" and not store.path("world_clip", world_clip_config(cfg)).exists():
        return None
    prepared = prepare(cfg, store)
    cached = all(store.path("hyperldm", ldm_key(cfg, g, prepared["data"], prepared["features"])).exists()
                 for g in generators)
    return prepared if cached else None


def bench_generator(cfg, name: str, data, features, store, samplers) -> dict:
    """{(kind, steps, seed): (seconds, {γ: task-mean accuracy}, latent spread)} for one generator."""
    L = cfg.ldm
    result = run_hyperldm(cfg, name, data, features, store)
    train_latents, _ = generator_latents(cfg, name, data, features, store)
    train_sd = train_latents.std(0)
    gammas = list(L.gammas)
    tasks = TaskTensors.from_tasks(features, data.split.test)
    scorer = adapter_scorer(cfg, features)
    print(f"\n{name} + HyperLDM ({cfg.profile}): {len(tasks)} meta-test tasks x {len(gammas)} γ x {L.samples_per_task} "
          f"samples = {len(tasks) * len(gammas) * L.samples_per_task} networks per sampler, "
          f"{torch.get_num_threads()} threads", flush=True)
    runs = {}
    # First the profile's sampler from another seed: seed noise (how far two draws of the same sampler differ;
    # a cheap sampler measures it as well as DDPM would), and the warm-up that keeps first-call costs out of
    # the times that follow.
    default_kind = cfg.ldm.sampler
    for kind, steps, seed in [(default_kind, cfg.ldm.sampler_steps, cfg.base.seed + 1), ("ddpm", None, cfg.base.seed)] \
            + [(k, s, cfg.base.seed) for k, s in samplers]:
        scheduler, steps = ldm_sampler(L, kind, steps)
        start = time.perf_counter()
        out = sample_and_score(result.ldm, result.weight_gen, scorer, tasks, gammas, L.samples_per_task,
                               scheduler, steps, seed)
        seconds = time.perf_counter() - start
        by_gamma = {g: acc.mean().item() for g, acc in per_gamma_task_mean(out, gammas, len(tasks)).items()}
        unconditional = out["latents"][out["gamma"] == 0] if 0.0 in gammas else out["latents"]
        spread = (unconditional.std(0) / train_sd).mean().item()
        runs[(kind, steps or L.train_steps, seed)] = (seconds, by_gamma, spread)
        print(f"  {kind} {steps or L.train_steps} steps (seed {seed}): {seconds:.1f} s", flush=True)
    return runs


def report(name: str, runs: dict, gammas: list[float], base_seed: int, ddpm_steps: int) -> dict:
    """Prints the table of one generator; returns {(kind, steps): (speed-up, mean change)}."""
    t_ref, ref, _ = runs[("ddpm", ddpm_steps, base_seed)]
    print(f"\n{name}: sampler | steps | seconds | speed-up | " + " | ".join(f"γ={g:g}" for g in gammas)
          + " | mean | change | largest per-γ change | latent spread (γ=0)")
    out = {}
    for (kind, steps, seed), (seconds, by_gamma, spread) in runs.items():
        changes = [by_gamma[g] - ref[g] for g in gammas]
        mean, change = sum(by_gamma.values()) / len(gammas), sum(changes) / len(gammas)
        label = kind if seed == base_seed else f"{kind} (seed {seed}: seed noise)"
        print(f"{label} | {steps} | {seconds:.1f} | {t_ref / seconds:.1f}x | "
              + " | ".join(f"{by_gamma[g]:.2f}" for g in gammas)
              + f" | {mean:.2f} | {change:+.2f} | {max(changes, key=abs):+.2f} | {spread:.2f}")
        if seed == base_seed:
            out[(kind, steps)] = (t_ref / seconds, change)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", default="HNet,HVAE", help="comma-separated: HNet, HVAE")
    ap.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                    help="comma-separated sampler[:steps[:steps...]] to compare with DDPM (default: %(default)s)")
    args = ap.parse_args()
    generators = args.generators.split(",")
    samplers = parse_samplers(args.samplers)

    store = ArtifactStore()
    cfg = get_config("quick")
    prepared = cached_ldms(cfg, generators, store)
    if prepared is None:
        print("no cached quick HyperLDMs: training them at the ci size now (run notebook 05 in quick for the real ones)")
        cfg = get_config("ci")
        prepared = prepare(cfg, store)
    default = (cfg.ldm.sampler, ldm_sampler(cfg.ldm)[1] or cfg.ldm.train_steps)
    if default[0] != "ddpm" and default not in samplers:
        samplers.append(default)
    tables = {name: report(name, bench_generator(cfg, name, prepared["data"], prepared["features"], store, samplers),
                           list(cfg.ldm.gammas), cfg.base.seed, cfg.ldm.train_steps)
              for name in generators}
    speedup = sum(t[default][0] for t in tables.values()) / len(tables)
    change = sum(t[default][1] for t in tables.values()) / len(tables)
    print(f"\nthe profile's sampler: {default[0]}, {default[1]} steps, mean over {', '.join(tables)}")
    print(f"speedup: {speedup:.1f}x, accuracy change: {change:+.2f} points")


if __name__ == "__main__":
    main()
