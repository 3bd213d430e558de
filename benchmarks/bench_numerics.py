"""What the reproducibility contract's pinned CPU paths cost (numerics.py): `quick`-sized work of the stages that
dominate a run, timed in two fresh processes of one thread each — pinned (ATen AVX2, MKL COMPATIBLE) and
native (HYPERCLIP_NATIVE_CPU=1: the CPU's own ATen kernels and MKL branch) — one after the other, then their
ratios. oneDNN is off in both.

    .venv/bin/python benchmarks/bench_numerics.py            # ends with `pinned / native: <ratio>x (geometric mean)`

Workloads: three second-order MAML meta-batches of the MNet family (5 inner steps, quick's maximum; the MAML family
is most of a quick run's baselines), 20 HyperLDM training steps at quick's widths, 5 world-CLIP training steps
(batch 256) and world-CLIP image encoding of 2,048 scenes (features).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time


def workloads() -> dict[str, float]:
    """Median seconds of each workload (7 repeats) in this process (its settings: numerics.identity())."""
    import statistics

    import torch

    from hyperclip_lib import numerics
    from hyperclip_lib.config import get_config
    from hyperclip_lib.encoders import build_world_clip
    from hyperclip_lib.maml import meta_loss
    from hyperclip_lib.models.adapter import AdapterSpec
    from hyperclip_lib.models.families import RECIPES, make_family
    from hyperclip_lib.models.hyperldm import train_ldm
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_maml import synthetic_batch

    numerics.apply(1)
    cfg = get_config("quick")

    def median_s(fn, repeats: int = 7) -> float:
        fn()   # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    family = make_family(RECIPES["Uncond. MNet-MAML"], AdapterSpec(256, cfg.base.hidden), 256, cfg.base.hnet_hidden,
                         cfg.base.hnet_latent, "cpu")
    params = {k: v.requires_grad_(True) for k, v in family.init_params(torch.Generator().manual_seed(0)).items()}
    batch = synthetic_batch(cfg.base.meta_batch, cfg.base.samples_per_task, 256, 256, "cpu")
    def maml():
        for _ in range(3):
            meta_loss(family, params, batch, "maml", 5, cfg.mnet_maml.inner_lr).backward()

    g = torch.Generator().manual_seed(0)
    latents, cond = torch.randn(2000, 64, generator=g), torch.randn(2000, 256, generator=g)
    ldm_cfg = get_config("quick", {"ldm.steps": 20}).ldm
    ldm = lambda: train_ldm(latents, cond, torch.ones(2000, dtype=torch.bool), ldm_cfg, 0)

    clip = build_world_clip(cfg.world_clip, cfg.world.image_size)
    images = torch.randn(cfg.world_clip.batch_size, 3, cfg.world.image_size, cfg.world.image_size, generator=g)
    opt = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=1e-4)

    def clip_steps():
        for _ in range(5):
            opt.zero_grad()
            clip.visual(images).square().mean().backward()
            opt.step()

    scenes = torch.randn(2048, 3, cfg.world.image_size, cfg.world.image_size, generator=g)

    def encode():
        with torch.no_grad():
            for chunk in scenes.split(256):
                clip.visual(chunk)

    return {"MAML 3 meta-batches": median_s(maml), "HyperLDM 20 steps": median_s(ldm),
            "world CLIP 5 steps": median_s(clip_steps), "features 2048 images": median_s(encode),
            "settings": numerics.identity()}


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(workloads()))
        return
    results = {}
    for mode, native in (("pinned", "0"), ("native", "1")):
        env = {**os.environ, "HYPERCLIP_NATIVE_CPU": native, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
               "HF_HUB_OFFLINE": "1"}
        env.pop("ATEN_CPU_CAPABILITY", None), env.pop("MKL_CBWR", None)
        done = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode}: {results[mode].pop('settings')}")
    ratios = []
    for name in results["pinned"]:
        pinned, native = results["pinned"][name], results["native"][name]
        ratios.append(pinned / native)
        print(f"{name:22s} pinned {1000 * pinned:8.1f} ms   native {1000 * native:8.1f} ms   {pinned / native:.2f}x")
    print(f"pinned / native: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x (geometric mean)")


if __name__ == "__main__":
    main()
