"""Fine-tuned-weights datasets: adapting in chunks of similar size against chunks taken in row order.

    .venv/bin/python benchmarks/bench_finetune.py                       # quick, if its baselines are cached
    .venv/bin/python benchmarks/bench_finetune.py --sources MNet --tasks 617

`maml.finetune_dataset` adapts `generator.finetune_per_task` networks per meta-train task, `base.eval_tasks`
at a time, and a chunk is padded to its longest task. Task sizes have a long tail (max ~10x the median), so
chunks taken in row order (what the library did before commit bd7716e; kept here as the reference) pad most
tasks to far more samples than they have; the library now adapts in size-sorted chunks. Both run here on the
same rows with the same random splits. Per source the script prints the sample slots processed per step
(padding included), seconds, the speed-up and the largest difference between the two sets of adapted
weights (float rounding: the arithmetic per task is the same). Uses the `quick` profile when its data and
source baselines are in the artifact cache, else `ci` (built in a minute), and says which. Ends with
`speedup: <ratio>x, max weight difference: <d>` over all sources.
"""
from __future__ import annotations

import argparse
import time

import torch

from hyperclip_lib.config import get_config
from hyperclip_lib.maml import adapt, finetune_dataset
from hyperclip_lib.stages.baselines import baseline_key, recipe_and_config, run_baseline
from hyperclip_lib.stages.data import encoder_backend, prepare, world_clip_config
from hyperclip_lib.stages.generators import SOURCES, generator_cfg
from hyperclip_lib.store import ArtifactStore
from hyperclip_lib.taskdata import Draw, TaskTensors, size_sorted_chunks


def cached_quick(sources, store: ArtifactStore):
    """quick's prepared data when it and the source baselines are cached (nothing is built), else None."""
    cfg = generator_cfg(get_config("quick"))
    if encoder_backend(cfg) == "world_clip" and not store.path("world_clip", world_clip_config(cfg)).exists():
        return None
    prepared = prepare(cfg, store)
    keys = [baseline_key(cfg, SOURCES[s], prepared["data"], prepared["features"]) for s in sources]
    return (cfg, prepared) if all(store.path("baseline", k).exists() for k in keys) else None


def row_order(family, params, tasks: TaskTensors, rows, drawn: Draw, steps: int, lr: float, chunk: int):
    """The reference: rows adapted `chunk` at a time in row order, each padded to its chunk's longest task."""
    out = []
    for pos in torch.arange(len(rows)).split(chunk):
        batch = tasks.drawn_batch(rows[pos], drawn[pos])
        with torch.no_grad():
            phi0 = family.start(params, batch)
        out.append(adapt(family, params, phi0.detach(), batch, steps, lr).detach())
    return torch.cat(out)


def padded_slots(sizes: torch.Tensor, chunks) -> int:
    return sum(len(c) * int(sizes[c].max()) for c in chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default="MNet,HNet", help="fine-tuning sources: MNet (the HVAE's), HNet")
    parser.add_argument("--tasks", type=int, default=200, help="meta-train tasks adapted (default 200)")
    args = parser.parse_args()
    sources = [s.strip() for s in args.sources.split(",")]
    store = ArtifactStore()
    found = cached_quick(sources, store)
    if found is None:
        print("quick's data or source baselines are not in the cache: using the ci profile")
        cfg = generator_cfg(get_config("ci"))
        prepared = prepare(cfg, store)
    else:
        cfg, prepared = found
    data, features = prepared["data"], prepared["features"]
    tasks = TaskTensors.from_tasks(features, data.split.train[:args.tasks])
    g, base = cfg.generator, cfg.base
    rows = torch.arange(len(tasks)).repeat(g.finetune_per_task)
    sizes = tasks.n_samples[rows]
    slots = {"row order": padded_slots(sizes, rows.split(base.eval_tasks)),
             "size-sorted": padded_slots(sizes, [rows[p] for p in size_sorted_chunks(sizes, base.eval_tasks)])}
    print(f"{cfg.profile}: {len(tasks)} meta-train tasks x {g.finetune_per_task} = {len(rows)} networks, "
          f"{g.finetune_steps} steps, {base.eval_tasks} per chunk, {torch.get_num_threads()} threads; "
          f"{int(sizes.sum())} real samples, padded: row order {slots['row order']}, size-sorted {slots['size-sorted']}")
    total = {"row order": 0.0, "size-sorted": 0.0}
    worst = 0.0
    for source in sources:
        method = SOURCES[source]
        lr = recipe_and_config(cfg, method)[1].inner_lr   # the source method's inner lr, as notebook 03
        baseline = run_baseline(cfg, method, data, features, store)
        rng = torch.Generator().manual_seed(base.seed)   # the splits finetune_dataset draws
        drawn = Draw.cat([tasks.draw(idx, None, base.support_fraction, rng) for idx in rows.split(base.eval_tasks)])
        start = time.perf_counter()
        reference = row_order(baseline.family, baseline.params, tasks, rows, drawn, g.finetune_steps, lr,
                              base.eval_tasks)
        seconds = {"row order": time.perf_counter() - start}
        start = time.perf_counter()
        library = finetune_dataset(baseline.family, baseline.params, tasks, g.finetune_per_task, g.finetune_steps,
                                   lr, base, base.seed)
        seconds["size-sorted"] = time.perf_counter() - start
        diff = (library.latent - reference).abs().max().item()
        worst = max(worst, diff)
        for k in total:
            total[k] += seconds[k]
        print(f"{source} ({method}, lr {lr}): row order {seconds['row order']:.1f} s, size-sorted "
              f"{seconds['size-sorted']:.1f} s, speed-up {seconds['row order'] / seconds['size-sorted']:.2f}x, "
              f"max |Δ adapted variable| {diff:.2e}")
    print(f"speedup: {total['row order'] / total['size-sorted']:.2f}x, max weight difference: {worst:.2e}")


if __name__ == "__main__":
    main()
