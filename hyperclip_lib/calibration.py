"""Calibrating the benchmark: where does zero-shot sit between chance and a few-shot ceiling?

On each meta-test task's query set: chance (uniform over the task's answers), the majority
answer of its support set, CLIP as base model (the zero-shot floor) and a CLIP-Adapter
fine-tuned on the support set (the few-shot ceiling). A benchmark is useful only if the floor
sits well below the ceiling (paper: 45% vs 60%).
"""
from __future__ import annotations

from collections import Counter

import torch
from tqdm.auto import tqdm

from .config import CalibrationConfig
from .features import FeatureStore
from .metavqa import Task
from .models.adapter import AdapterSpec, clip_logits
from .models.families import AdapterFamily, task_accuracies, task_losses
from .records import summarize_accuracy
from .taskdata import Batch, TaskTensors, size_sorted_chunks

METHODS = ("chance", "majority answer of support", "CLIP as base model (zero-shot floor)",
           "adapter fine-tuned on support (few-shot ceiling)")


def task_data(features: FeatureStore, task: Task, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features [n, D], answer indices [n]) of a task's 'support' or 'query' set."""
    samples = getattr(task, part)
    index = {a: i for i, a in enumerate(features.answers[task.question])}
    return features.images([img for img, _ in samples]), torch.tensor([index[a] for _, a in samples])


def support_majority(features: FeatureStore, task: Task) -> float:
    """Accuracy (%) on the task's query set of always answering its support set's most common answer."""
    _, ys = task_data(features, task, "support")
    _, yq = task_data(features, task, "query")
    return 100 * (yq == Counter(ys.tolist()).most_common(1)[0][0]).float().mean().item()


def finetune_adapters(family: AdapterFamily, batch: Batch, cfg: CalibrationConfig) -> torch.Tensor:
    """Adam on every task's own adapter weights [B, P] (from plain CLIP), full-batch cross-entropy on its
    support set. One step on the sum of the task losses is each task's own step: a task's loss reads only
    its weights and Adam is elementwise."""
    W = family.spec.init(torch.Generator().manual_seed(cfg.seed)).repeat(len(batch), 1).requires_grad_(True)
    opt = torch.optim.Adam([W], lr=cfg.lr)
    for _ in range(cfg.steps):
        loss = task_losses(family.logits({}, W, batch.x, batch), batch.labels, batch.support).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach()


def calibrate(features: FeatureStore, tasks: tuple[Task, ...], cfg: CalibrationConfig,
              chunk: int = 64) -> list[dict]:
    """One row per task: the accuracy (in %) of each reference method on its query set. The ceiling's
    fine-tuning runs `chunk` tasks at a time, in chunks of similar size (little padding)."""
    family = AdapterFamily(AdapterSpec(features.dim, cfg.hidden))
    tensors = TaskTensors.from_tasks(features, tasks)
    ceiling = torch.empty(len(tasks))
    for idx in tqdm(size_sorted_chunks(tensors.n_samples, chunk), desc="calibration", leave=False):
        batch = tensors.fixed_batch(idx)
        W = finetune_adapters(family, batch, cfg)
        with torch.no_grad():
            ceiling[idx] = task_accuracies(family.logits({}, W, batch.x, batch), batch.labels, batch.query)
    rows = []
    for task, top in zip(tasks, ceiling.tolist()):
        xq, yq = task_data(features, task, "query")
        with torch.no_grad():
            floor = 100 * (clip_logits(xq, features.answer_embeddings[task.question]).argmax(-1) == yq).float().mean()
        accs = [100 / len(task.answers), support_majority(features, task), floor.item(), top]
        rows.append({"question": task.question, "n_query": len(yq), **dict(zip(METHODS, accs))})
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Task mean (as the paper reports) and sample-weighted mean of each method."""
    n = torch.tensor([r["n_query"] for r in rows], dtype=torch.float64)
    return {m: summarize_accuracy(torch.tensor([r[m] for r in rows], dtype=torch.float64), n) for m in METHODS}
