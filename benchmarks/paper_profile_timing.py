"""Time every baseline at the `paper` profile's sizes on synthetic Meta-VQA-shaped tasks.

    .venv/bin/python benchmarks/paper_profile_timing.py --device cuda            # a GPU
    .venv/bin/python benchmarks/paper_profile_timing.py --profile ci --epochs 1  # a CPU smoke run

Real Meta-VQA needs VQA v2, COCO and ViT-L/14@336 weights; this measures what they would cost
to train without them: tasks with the paper's counts and sizes (870 meta-train / 373 meta-test,
ragged sizes around 58 support + 26 query samples, ~9 answers, 768-d features), each method
trained for `--epochs` of its Table 3 schedule and scored zero- and few-shot, then its full
schedule extrapolated from the measured epoch time. Accuracies on random data are meaningless
and not printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from hyperclip_lib.config import get_config
from hyperclip_lib.maml import evaluate, train
from hyperclip_lib.models.adapter import AdapterSpec
from hyperclip_lib.models.families import RECIPES, make_family
from hyperclip_lib.taskdata import TaskTensors


def synthetic_tasks(n_tasks: int, dim: int, generator: torch.Generator) -> TaskTensors:
    sizes = torch.exp(torch.randn(n_tasks, generator=generator) * 0.6 + 4.3).round().long().clamp(20, 600)
    n_answers = torch.randint(2, 17, (n_tasks,), generator=generator)
    n, a = int(sizes.max()), int(n_answers.max())
    n_images = 20_000
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=generator), dim=-1)
    return TaskTensors(
        questions=[f"task {i}" for i in range(n_tasks)], image_features=unit(n_images, dim),
        image_index=torch.randint(0, n_images, (n_tasks, n), generator=generator),
        labels=(torch.rand(n_tasks, n, generator=generator) * n_answers[:, None]).long(),
        n_samples=sizes, n_support=(sizes * 0.7).round().long(), answers=unit(n_tasks, a, dim),
        answer_mask=torch.arange(a)[None] < n_answers[:, None], text=unit(n_tasks, dim))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=1, help="epochs actually run per method (default 1)")
    ap.add_argument("--methods", default=",".join(RECIPES), help="comma-separated method names")
    args = ap.parse_args()

    cfg = get_config(args.profile)
    dim = 768 if args.profile == "paper" else 64
    g = torch.Generator().manual_seed(0)
    train_tasks = synthetic_tasks(870, dim, g).to(args.device)
    test_tasks = synthetic_tasks(373, dim, g).to(args.device)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"profile {args.profile} on {name}: adapter {dim}->{cfg.base.hidden}->{dim}, hypernet hidden "
          f"{cfg.base.hnet_hidden}, meta-batch {cfg.base.meta_batch}, torch {torch.__version__}")
    print(f"{'method':24s} {'s/epoch':>8s} {'Table 3 epochs':>14s} {'full schedule':>14s} {'eval (s)':>9s} {'peak GiB':>9s}")
    for method in args.methods.split(","):
        recipe = RECIPES[method]
        method_cfg = getattr(cfg, recipe.section)
        family = make_family(recipe, AdapterSpec(dim, cfg.base.hidden), dim, cfg.base.hnet_hidden,
                             cfg.base.hnet_latent, args.device)
        params = {k: v.to(args.device).requires_grad_(True) for k, v in family.init_params(g).items()}
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t = time.perf_counter()
        run_cfg = dataclasses.replace(method_cfg, epochs=args.epochs)
        train(family, params, recipe.training, run_cfg, dataclasses.replace(cfg.base, curve_points=0),
              train_tasks, torch.arange(len(train_tasks)), seed=0, desc=method)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        per_epoch = (time.perf_counter() - t) / args.epochs if recipe.training != "none" else 0.0
        t = time.perf_counter()
        evaluate(family, params, test_tasks, cfg.base, few_shot_lr=method_cfg.inner_lr)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda") else float("nan")
        epochs = method_cfg.epochs if recipe.training != "none" else 0
        print(f"{method:24s} {per_epoch:8.2f} {epochs:14d} {per_epoch * epochs / 60:11.1f} min "
              f"{time.perf_counter() - t:9.2f} {peak:9.2f}", flush=True)


if __name__ == "__main__":
    main()
