"""A rehearsal of the `paper` path at the real benchmark's shape, on this machine: every notebook on the authors'
released Meta-VQA split (1,243 tasks of 42 to 1,776 samples, 104,112 image-answer pairs, the real questions and
answer-prompt templates), at the paper's adapter and hypernetwork sizes, with epochs cut to fit a CPU.

No COCO image or CLIP weight is here, so the features are stand-ins: a deterministic unit vector per image name
and per text, at the paper's width (768), in a features file like the one `hyperclip extract-features` writes
on a GPU machine. Accuracies on them mean nothing and are not reported; what the rehearsal shows is that the
path runs at this scale — time and peak memory per notebook, time per stage, well-formed records.

    .venv/bin/hyperclip rehearse-real [--out runs/rehearsal] [--tasks N] [--set key=value ...]
"""
from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import torch

from .config import MAML_SECTIONS, METHOD_SECTIONS
from .encoders import open_clip_identity, open_clip_width
from .features import FeatureFile
from .metavqa import TaskSplit, load_meta_vqa, prompt_file, read_json, write_meta_vqa
from .stages.data import texts_to_embed

STANDIN_MODEL, STANDIN_PRETRAINED = "ViT-L-14-336", "standin"   # the paper's encoder's name and width; no weights
# The `paper` profile's sizes with its schedules cut to about an hour on a 2-core CPU: every Table 3 row one epoch
# of at most 1 inner step (second order through it for MAML; at Table 3's 0-10, one MNet-MAML epoch ran past 20
# min, and at 2 the HNet-MAML rows took 9 min each), 2 points on each training curve, 3 few-shot, 10 ceiling and
# 3 fine-tuning steps instead of 50 (at 50, scoring one baseline took 8 min and the HNet's fine-tuned set of
# 2 × 870 networks ran past 50 min), the generators' and HyperCLIP's training a pass or two, 3 guidance steps,
# a HyperLDM of CPU widths sampled with SDE-DPM-Solver++ (the paper's DDPM over all 350 steps took 24.5 of the
# first full rehearsal's 81.5 min, its 10 guidance steps 11.4; the 1.15 B-parameter HyperLDM and DDPM are the GPU
# check's, benchmarks/gpu_check.py).
ONE_EPOCH = {f"{m}.epochs": 1 for m in METHOD_SECTIONS}
BUDGET = {**ONE_EPOCH, **{f"{m}.inner_steps_max": 1 for m in MAML_SECTIONS}, "base.few_shot_steps": 3,
          "base.curve_points": 2, "calibration.steps": 10,
          "generator.finetune_per_task": 2, "generator.finetune_steps": 3, "generator.hvae_epochs": 1, "hyperclip.epochs": 2,
          "hyperclip.guidance_steps": 3,
          "ldm.width1": 512, "ldm.width2": 1024, "ldm.width3": 512, "ldm.steps": 200, "ldm.batch": 128,
          "ldm.samples_per_task": 1, "ldm.sampler": "sde-dpmsolver++"}


def standin_vector(text: str, width: int) -> torch.Tensor:
    """A unit vector determined by `text` alone (its SHA-256 seeds the draw)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return torch.nn.functional.normalize(torch.randn(width, generator=torch.Generator().manual_seed(seed)), dim=0)


def subset(meta_train: dict, meta_test: dict, tasks: int) -> tuple[dict, dict]:
    """The first `tasks` meta-train tasks and the first 30% as many meta-test tasks (at least 2), for a small run."""
    n_test = max(2, math.ceil(0.3 * tasks))
    return dict(list(meta_train.items())[:tasks]), dict(list(meta_test.items())[:n_test])


def prepare(out: Path, meta_dir: Path, tasks: int | None = None, model: str = STANDIN_MODEL,
            prompt_template: str = "a photo of {}.") -> dict:
    """Write the rehearsal's inputs under `out` — the split (or its first `tasks` tasks), a VQA root holding only
    the answer-prompt templates, the stand-in features file — and return the config overrides that use them."""
    meta_train, meta_test = load_meta_vqa(meta_dir)
    if tasks is not None:
        meta_train, meta_test = subset(meta_train, meta_test, tasks)
    write_meta_vqa(meta_train, meta_test, out / "meta")
    templates_src = meta_dir / "prompt_meta.json"
    templates = read_json(templates_src) if templates_src.exists() else {}
    prompts = prompt_file(out / "vqa")
    prompts.parent.mkdir(parents=True, exist_ok=True)
    if templates_src.exists():
        shutil.copyfile(templates_src, prompts)
    split = TaskSplit.from_meta(meta_train, meta_test)
    width = open_clip_width(model)
    names = split.image_names()
    texts = texts_to_embed(split, templates, prompt_template)
    encoder, _ = open_clip_identity(model, STANDIN_PRETRAINED)
    FeatureFile(encoder, names, torch.stack([standin_vector(n, width) for n in names]), texts,
                torch.stack([standin_vector(t, width) for t in texts])).save(out / "standin_features.npz")
    return {"data.vqa_root": str((out / "vqa").resolve()), "data.meta_dir": str((out / "meta").resolve()),
            "data.image_features": str((out / "standin_features.npz").resolve()), "encoder.model": model,
            "encoder.pretrained": STANDIN_PRETRAINED, "encoder.prompt_template": prompt_template}


def check_records(records: list[dict], n_test: int) -> list[str]:
    """What is wrong with a rehearsal's records (empty when every one is well-formed)."""
    problems = []
    for r in records:
        label = f"{r.get('method')} seed {r.get('seed')}"
        for key in ("kind", "method", "seed", "zero_shot", "per_task", "compute", "versions", "config_hash"):
            if key not in r:
                problems.append(f"{label}: no {key!r}")
        if len(r.get("per_task", {})) != n_test:
            problems.append(f"{label}: {len(r.get('per_task', {}))} meta-test tasks scored, expected {n_test}")
        value = r.get("zero_shot", {}).get("task_mean")
        if not isinstance(value, float) or not 0 <= value <= 100:
            problems.append(f"{label}: zero-shot task mean {value!r}")
    return problems
