"""One MAML meta-batch, batched over tasks vs. a per-task Python loop doing the same arithmetic.

    .venv/bin/python benchmarks/bench_maml.py                 # quick sizes, CPU
    .venv/bin/python benchmarks/bench_maml.py --profile paper --device cuda

Meta-batch of tasks, second-order MAML with a fixed number of inner steps, on synthetic features
of the profile's sizes (the arithmetic, not the data, sets the cost). Checks that both give the
same meta-gradient, reports the batched version's achieved GFLOP/s next to this machine's
measured matmul rate, and ends with `speedup: <ratio>x`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hyperclip_lib.config import get_config
from hyperclip_lib.maml import meta_loss
from hyperclip_lib.models.adapter import AdapterSpec
from hyperclip_lib.models.families import RECIPES, make_family
from hyperclip_lib.taskdata import Batch


def synthetic_batch(tasks: int, samples: int, dim: int, text_dim: int, device: str, seed: int = 0) -> Batch:
    """Ragged answer counts (2..8, padded), fixed sample count; 70% support, 30% query."""
    g = torch.Generator().manual_seed(seed)
    n_answers = torch.randint(2, 9, (tasks,), generator=g)
    a_max = int(n_answers.max())
    answer_mask = torch.arange(a_max)[None] < n_answers[:, None]
    labels = (torch.rand(tasks, samples, generator=g) * n_answers[:, None]).long()
    support = (torch.arange(samples) < round(0.7 * samples)).float().expand(tasks, samples)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)
    batch = Batch(unit(tasks, samples, dim), labels, support.clone(), 1 - support, unit(tasks, a_max, dim),
                  answer_mask, unit(tasks, text_dim))
    return Batch(*(t.to(device) for t in vars(batch).values()))


def task_slice(batch: Batch, i: int) -> Batch:
    """Task i alone, without the answer padding the batched version carries."""
    a = int(batch.answer_mask[i].sum())
    return Batch(batch.x[i:i + 1], batch.labels[i:i + 1], batch.support[i:i + 1], batch.query[i:i + 1],
                 batch.answers[i:i + 1, :a], batch.answer_mask[i:i + 1, :a], batch.text[i:i + 1])


def meta_gradient(family, params, batch, steps, lr, per_task_loop: bool) -> list[torch.Tensor]:
    for p in params.values():
        p.grad = None
    if per_task_loop:
        for i in range(len(batch)):
            (meta_loss(family, params, task_slice(batch, i), "maml", steps, lr) / len(batch)).backward()
    else:
        meta_loss(family, params, batch, "maml", steps, lr).backward()
    return [p.grad.clone() for p in params.values()]


def timed(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(device: str, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    seconds = timed(lambda: a @ b, 5, device)
    return 2 * n ** 3 / seconds / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", help="sizes from this profile (default quick)")
    ap.add_argument("--method", default="Uncond. MNet-MAML", choices=[m for m, r in RECIPES.items() if r.training == "maml"])
    ap.add_argument("--tasks", type=int, default=32, help="meta-batch size (default 32)")
    ap.add_argument("--steps", type=int, default=10, help="inner steps (default 10)")
    ap.add_argument("--samples", type=int, default=None, help="samples per task (default: the profile's, or 48)")
    ap.add_argument("--dim", type=int, default=None, help="feature width (default: 256, or 768 for paper)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    cfg = get_config(args.profile).base
    dim = args.dim or (768 if args.profile == "paper" else 256)
    samples = args.samples or cfg.samples_per_task or 48
    recipe = RECIPES[args.method]
    lr = get_config(args.profile).__getattribute__(recipe.section).inner_lr
    family = make_family(recipe, AdapterSpec(dim, cfg.hidden), dim, cfg.hnet_hidden, cfg.hnet_latent, args.device)
    params = {k: v.to(args.device).requires_grad_(True)
              for k, v in family.init_params(torch.Generator().manual_seed(0)).items()}
    # A trained-looking start: a nonzero residual branch, so second-order terms are not trivially 0.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for v in params.values():
            v.add_(0.05 * torch.randn(v.shape, generator=g).to(v.device))
    batch = synthetic_batch(args.tasks, samples, dim, dim, args.device)
    print(f"{args.method}: {args.tasks} tasks x {samples} samples, adapter {dim}->{cfg.hidden}->{dim} "
          f"({family.spec.n_params} weights), {args.steps} inner steps, second order, {args.device}, "
          f"{torch.get_num_threads()} threads")

    # Agreement in float64 isolates the algorithm from float32 round-off, which ten second-order
    # steps at logit scale 100 amplify; float32 is shown beside it.
    for dtype in (torch.float64, torch.float32):
        p = {k: v.detach().to(dtype).requires_grad_(True) for k, v in params.items()}
        b = Batch(*(t.to(dtype) if t.is_floating_point() else t for t in vars(batch).values()))
        flat_b = torch.cat([g.flatten() for g in meta_gradient(family, p, b, args.steps, lr, False)])
        flat_l = torch.cat([g.flatten() for g in meta_gradient(family, p, b, args.steps, lr, True)])
        err = ((flat_b - flat_l).norm() / flat_l.norm()).item()
        verdict = ("agree" if err < 1e-10 else "DISAGREE") + " at tolerance 1e-10" if dtype == torch.float64 \
            else "round-off only, if float64 agrees"
        print(f"meta-gradient ({str(dtype)[6:]}): norm {flat_l.norm().item():.4g}, |batched - loop| / |loop| = "
              f"{err:.2e} ({verdict})")

    t_batched = timed(lambda: meta_gradient(family, params, batch, args.steps, lr, False), args.repeats, args.device)
    t_loop = timed(lambda: meta_gradient(family, params, batch, args.steps, lr, True), args.repeats, args.device)
    with FlopCounterMode(display=False) as counter:
        meta_gradient(family, params, batch, args.steps, lr, per_task_loop=False)
    gflop = counter.get_total_flops() / 1e9
    peak = matmul_gflops(args.device)
    print(f"batched: {t_batched * 1e3:.1f} ms per meta-batch, {gflop:.2f} GFLOP (matmuls) -> "
          f"{gflop / t_batched:.1f} GFLOP/s; this machine's {2048}^3 matmul: {peak:.1f} GFLOP/s "
          f"({100 * gflop / t_batched / peak:.0f}% of it)")
    print(f"per-task loop: {t_loop * 1e3:.1f} ms per meta-batch")
    print(f"speedup: {t_loop / t_batched:.2f}x")


if __name__ == "__main__":
    main()
