"""Calibrating the benchmark: where does zero-shot sit between chance and a few-shot ceiling?

On each meta-test task's query set: chance (uniform over the task's answers), the majority
answer of its support set, CLIP as base model (the zero-shot floor) and a CLIP-Adapter
fine-tuned on the support set (the few-shot ceiling). A benchmark is useful only if the floor
sits well below the ceiling (paper: 45% vs 60%).
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import CalibrationConfig
from .features import FeatureStore
from .metavqa import Task
from .models.adapter import AdapterSpec, adapter_logits, clip_logits
from .records import summarize_accuracy

METHODS = ("chance", "majority answer of support", "CLIP as base model (zero-shot floor)",
           "adapter fine-tuned on support (few-shot ceiling)")


def task_data(features: FeatureStore, task: Task, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features [n, D], answer indices [n]) of a task's 'support' or 'query' set."""
    samples = getattr(task, part)
    index = {a: i for i, a in enumerate(features.answers[task.question])}
    return features.images([img for img, _ in samples]), torch.tensor([index[a] for _, a in samples])


def finetune_adapter(x: torch.Tensor, y: torch.Tensor, answer_emb: torch.Tensor, spec: AdapterSpec,
                     cfg: CalibrationConfig) -> torch.Tensor:
    """Adam on the adapter's flat weights, full-batch cross-entropy on the support set."""
    W = spec.init(torch.Generator().manual_seed(cfg.seed)).requires_grad_(True)
    opt = torch.optim.Adam([W], lr=cfg.lr)
    for _ in range(cfg.steps):
        loss = F.cross_entropy(adapter_logits(x, W, spec, answer_emb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach()


def calibrate(features: FeatureStore, tasks: tuple[Task, ...], cfg: CalibrationConfig) -> list[dict]:
    """One row per task: the accuracy (in %) of each reference method on its query set."""
    spec = AdapterSpec(features.dim, cfg.hidden)
    rows = []
    for task in tqdm(tasks, desc="calibration", leave=False):
        xs, ys = task_data(features, task, "support")
        xq, yq = task_data(features, task, "query")
        emb = features.answer_embeddings[task.question]
        majority = Counter(ys.tolist()).most_common(1)[0][0]
        W = finetune_adapter(xs, ys, emb, spec, cfg)
        with torch.no_grad():
            accs = [100 / len(task.answers),
                    100 * (yq == majority).float().mean().item(),
                    100 * (clip_logits(xq, emb).argmax(-1) == yq).float().mean().item(),
                    100 * (adapter_logits(xq, W, spec, emb).argmax(-1) == yq).float().mean().item()]
        rows.append({"question": task.question, "n_query": len(yq), **dict(zip(METHODS, accs))})
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Task mean (as the paper reports) and sample-weighted mean of each method."""
    n = torch.tensor([r["n_query"] for r in rows], dtype=torch.float64)
    return {m: summarize_accuracy(torch.tensor([r[m] for r in rows], dtype=torch.float64), n) for m in METHODS}
