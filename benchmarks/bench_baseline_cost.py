"""Where a MAML-family baseline's time goes on this machine: one meta-step (at the config, and with each of three
cheaper settings) against one few-shot scoring of the meta-validation tasks, which early stopping repeats at
`base.curve_points` + 1 points. On the profile's world and features (built, or read from the cache, first).

    .venv/bin/python benchmarks/bench_baseline_cost.py [--set key=value ...]   # default: --set data.validation_fraction=0.15

Prints seconds per meta-step and per scoring, and, at the config's schedule, meta-steps ÷ scoring time per row.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from hyperclip_lib import numerics
from hyperclip_lib.config import MAML_SECTIONS, get_config, parse_overrides, with_overrides
from hyperclip_lib.maml import TaskTensors, evaluate, train
from hyperclip_lib.stages.baselines import build_family, recipe_and_config, training_pool
from hyperclip_lib.workbook import open_workbook

METHODS = ("Uncond. MNet-MAML", "Uncond. HNet-MAML")
CHEAPER = {"samples_per_task 24": {"base.samples_per_task": 24}, "meta_batch 64": {"base.meta_batch": 64},
           "inner_steps_max 2": {f"{m}.inner_steps_max": 2 for m in MAML_SECTIONS}}
STEPS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=["data.validation_fraction=0.15"])
    cfg = get_config("quick", parse_overrides(parser.parse_args().overrides))
    numerics.apply(cfg.compute.threads)
    wb = open_workbook("quick", cfg=cfg)
    if not wb.data.validation:
        raise SystemExit("no meta-validation tasks: pass --set data.validation_fraction=0.15")
    train_tasks = TaskTensors.from_tasks(wb.features, wb.data.train_tasks)
    validation = TaskTensors.from_tasks(wb.features, wb.data.validation_tasks)
    for method in METHODS:
        per_step = {}
        for label, overrides in {"config": {}, **CHEAPER}.items():
            c = with_overrides(cfg, overrides)
            recipe, method_cfg = recipe_and_config(c, method)
            family = build_family(c, method, wb.features)
            params = {k: v.requires_grad_(True) for k, v in family.init_params(torch.Generator().manual_seed(0)).items()}
            pool = training_pool(c, method, len(train_tasks))[: c.base.meta_batch * STEPS]
            start = time.perf_counter()
            history = train(family, params, recipe.training, dataclasses.replace(method_cfg, epochs=1), c.base,
                            train_tasks, pool, 0)
            per_step[label] = (time.perf_counter() - start) / len(history["step"])
            print(f"{method}, {label}: {per_step[label]:.3f} s per meta-step of {c.base.meta_batch} tasks", flush=True)
        recipe, method_cfg = recipe_and_config(cfg, method)
        family = build_family(cfg, method, wb.features)
        params = family.init_params(torch.Generator().manual_seed(0))
        start = time.perf_counter()
        evaluate(family, params, validation, cfg.base, few_shot_lr=method_cfg.inner_lr)
        scoring = time.perf_counter() - start
        steps = method_cfg.epochs * math.ceil(len(training_pool(cfg, method, len(train_tasks))) / cfg.base.meta_batch)
        checks = cfg.base.curve_points + 1
        print(f"{method}: few-shot scoring of {len(validation)} meta-validation tasks {scoring:.1f} s; at the "
              f"config's schedule {steps} meta-steps take {steps * per_step['config']:.0f} s and {checks} scorings "
              f"{checks * scoring:.0f} s (ratio {steps * per_step['config'] / (checks * scoring):.2f})", flush=True)


if __name__ == "__main__":
    main()
