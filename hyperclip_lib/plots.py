"""Figures for the notebooks; each returns its matplotlib Figure, `save_figure` writes PNG and SVG."""
from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from .metavqa import Task, TaskSplit, find_image

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def save_figure(fig, name: str, folder: Path = FIGURES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        fig.savefig(folder / f"{name}.{ext}", bbox_inches="tight", dpi=120)
    return folder / f"{name}.png"


def task_grid(vqa_root: Path, task: Task, n: int = 8, part: str = "support"):
    """n samples of a task as an image grid, each titled with its answer, taking answers in turn."""
    by_answer: dict[str, list] = {}
    for sample in getattr(task, part):
        by_answer.setdefault(sample[1], []).append(sample)
    interleaved = [s for group in itertools.zip_longest(*by_answer.values()) for s in group if s]
    samples = interleaved[:n]
    fig, axes = plt.subplots(1, len(samples), figsize=(1.6 * len(samples), 2.1), squeeze=False)
    for ax, (img, answer) in zip(axes[0], samples):
        ax.imshow(Image.open(find_image(vqa_root, img)))
        ax.set_title(answer, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{task.question}   answers: {', '.join(task.answers)}", fontsize=10, y=1.02)
    return fig


def task_histograms(split: TaskSplit):
    tasks = split.all_tasks()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    n_answers = [len(t.answers) for t in tasks]
    a.hist(n_answers, bins=np.arange(1.5, max(n_answers) + 1.5), color="tab:blue", edgecolor="white")
    a.set(xlabel="answers per task", ylabel="tasks", title=f"mean {np.mean(n_answers):.2f} answers per task")
    sizes = [len(t.support) + len(t.query) for t in tasks]
    b.hist(sizes, bins=30, color="tab:orange", edgecolor="white")
    b.set(xlabel="samples per task (support + query)", ylabel="tasks (log scale)", yscale="log",
          title=f"median {np.median(sizes):.0f} samples")
    fig.tight_layout()
    return fig


def training_curve(history: dict, title: str = "world CLIP training"):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    loss = np.asarray(history["loss"])
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    ax.plot(history["step"], loss, alpha=0.3, color="tab:blue", label="contrastive loss")
    ax.plot(history["step"][k - 1:], smooth, color="tab:blue", label=f"mean of {k} steps")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def calibration_bars(summary: dict[str, dict[str, float]]):
    fig, ax = plt.subplots(figsize=(7, 2.8))
    names = list(summary)
    vals = [summary[m]["task mean"] for m in names]
    ax.barh(names, vals, color=["0.6", "0.45", "tab:red", "tab:green"][: len(names)])
    for y, v in enumerate(vals):
        ax.text(v + 0.5, y, f"{v:.1f}%", va="center")
    ax.invert_yaxis()
    ax.set(xlabel="accuracy on meta-test query sets (task mean, %)", xlim=(0, 100))
    fig.tight_layout()
    return fig
