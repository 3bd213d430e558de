"""Figures for the notebooks; each returns its matplotlib Figure, `save_figure` writes PNG and SVG."""
from __future__ import annotations

import io
import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from .metavqa import Task, TaskSplit, find_image
from .models.latent import principal_directions
from .records import PAPER_CEILING, PAPER_FLOOR, PAPER_ZERO_SHOT, gap_closed
from .store import atomic_write_bytes

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def save_figure(fig, name: str, folder: str | Path | None = None) -> Path:
    """Write `name`.png and .svg into `folder` (None: figures/ at the repository root)."""
    folder = Path(folder) if folder is not None else FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):   # via a temporary file: notebooks running in parallel may write one name
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, bbox_inches="tight", dpi=120)
        atomic_write_bytes(folder / f"{name}.{ext}", buffer.getvalue())
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
        path = find_image(vqa_root, img)
        if path is None:   # features read from a file (data.image_features): the images need not be here
            ax.text(0.5, 0.5, "image\nnot here", ha="center", va="center", fontsize=8, color="grey")
        else:
            ax.imshow(Image.open(path))
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


def moving_mean(steps, values, points: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, means, window) of `values` averaged over windows of len/points steps."""
    values = np.asarray(values)
    k = max(1, len(values) // points)
    return np.asarray(steps)[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), k


def training_curve(history: dict, title: str = "world CLIP training"):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps, smooth, k = moving_mean(history["step"], history["loss"], 50)
    ax.plot(history["step"], history["loss"], alpha=0.3, color="tab:blue", label="contrastive loss")
    ax.plot(steps, smooth, color="tab:blue", label=f"mean of {k} steps")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def calibration_bars(summary: dict[str, dict[str, float]]):
    fig, ax = plt.subplots(figsize=(7, 2.8))
    names = list(summary)
    vals = [summary[m]["task_mean"] for m in names]
    ax.barh(names, vals, color=["0.6", "0.45", "tab:red", "tab:green"][: len(names)])
    for y, v in enumerate(vals):
        ax.text(v + 0.5, y, f"{v:.1f}%", va="center")
    ax.invert_yaxis()
    ax.set(xlabel="accuracy on meta-test query sets (task mean, %)", xlim=(0, 100))
    fig.tight_layout()
    return fig


def baseline_curves(results, floor: float | None = None):
    """Left: each method's training loss (smoothed). Middle: meta-test zero-shot accuracy along training. Right,
    when schedules were chosen on meta-validation: the validation accuracy each was chosen on, the chosen point
    ringed."""
    validated = any("validation_step" in r.history for r in results)
    fig, axes = plt.subplots(1, 3 if validated else 2, figsize=(19 if validated else 13, 3.8))
    a, b = axes[:2]
    for i, r in enumerate(results):
        share = r.record["descriptor_fraction"]
        h, color = r.history, f"C{i % 10}"
        name = r.record["method"] + ("" if share == 1.0 else f" ({100 * share:.0f}% descriptors)")
        if not h["loss"]:
            continue
        a.plot(*moving_mean(h["step"], h["loss"], 30)[:2], color=color, label=name)
        b.plot(h["curve_step"], h["curve_zero_shot"], "o-", ms=3, color=color, label=name)
        if "validation_step" in h:
            metric = next(k for k in h if k.startswith("validation_") and k != "validation_step")
            curve = h[metric]
            axes[2].plot(h["validation_step"], curve, "o-", ms=3, color=color,
                         label=f"{name} ({metric.removeprefix('validation_').replace('_', '-')})")
            axes[2].plot(h["chosen_step"], curve[h["validation_step"].index(h["chosen_step"])], "o", ms=9,
                         mfc="none", color=color)
    a.set(xlabel="optimiser step", ylabel="outer loss (moving mean)", yscale="log", title="training loss")
    if floor is not None:
        b.axhline(floor, color="k", ls="--", lw=1, label="CLIP as base model (floor)")
    b.set(xlabel="optimiser step", ylabel="zero-shot accuracy (%)", title="meta-test zero-shot along training")
    if validated:
        axes[2].set(xlabel="optimiser step", ylabel="accuracy (%)", title="meta-validation: what each schedule is "
                    "chosen on (ringed)")
        axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def accuracy_bars(zero_shot, few_shot, floor: float, ceiling: float):
    """Zero- and few-shot task-mean accuracy per method (± s.d. over seeds), floor and ceiling marked."""
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(zero_shot) + 1.2))
    labels = [f"{m} ({d})" for m, d in zip(zero_shot["method"], zero_shot["descriptors"])]
    y = np.arange(len(labels))
    ax.barh(y - 0.2, zero_shot["mean"], 0.4, xerr=zero_shot["std"].fillna(0), color="tab:blue", label="zero-shot")
    few = {m: (v, s) for m, v, s in zip(few_shot["method"] + few_shot["descriptors"], few_shot["mean"], few_shot["std"])}
    fv = [few.get(m + d, (np.nan, np.nan)) for m, d in zip(zero_shot["method"], zero_shot["descriptors"])]
    ax.barh(y + 0.2, [v for v, _ in fv], 0.4, xerr=[0 if np.isnan(s) else s for _, s in fv], color="tab:orange",
            label="few-shot (50 steps on support)")
    ax.axvline(floor, color="k", ls="--", lw=1, label=f"floor {floor:.1f}%")
    ax.axvline(ceiling, color="tab:green", ls="--", lw=1, label=f"ceiling {ceiling:.1f}%")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    lo = max(0, min(floor, np.nanmin(zero_shot["mean"])) - 10)
    hi = min(100, np.nanmax([ceiling, *zero_shot["mean"], *[v for v, _ in fv]]) + 8)
    ax.set(xlabel="meta-test accuracy (task mean, %)", xlim=(lo, hi))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def latent_map(latents, labels: list[str], title: str):
    """Training-task latents on their first two principal components, coloured by a label per row."""
    mean, directions, _ = principal_directions(latents, 2)
    xy = ((latents - mean) @ directions.T).numpy()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, label in enumerate(sorted(set(labels))):
        rows = [k for k, l in enumerate(labels) if l == label]
        ax.scatter(xy[rows, 0], xy[rows, 1], s=6, alpha=0.6, color=f"C{i % 10}", label=label)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def loss_curves(history: dict, keys: list[str], title: str):
    """Moving means of the named per-step series of a training history."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, key in enumerate(keys):
        ax.plot(*moving_mean(history["step"], history[key], 30)[:2], color=f"C{i}", label=key)
    ax.set(xlabel="optimiser step", ylabel="moving mean", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def similarity_matrix(sim, questions: list[str], title: str):
    """Cosine similarity of networks (rows, by the task they were fine-tuned on) and questions (columns)."""
    fig, ax = plt.subplots(figsize=(0.32 * len(questions) + 4, 0.32 * len(questions) + 1.5))
    sns.heatmap(np.asarray(sim), cmap="viridis", square=True, ax=ax, cbar_kws={"fraction": 0.03, "label": "cosine"},
                xticklabels=questions, yticklabels=[f"network of: {q}" for q in questions])
    ax.tick_params(labelsize=6)
    ax.set(title=title)
    fig.tight_layout()
    return fig


def guidance_trajectories(results):
    """Mean cosine(CLIP_H(h(z)), question) and mean zero-shot accuracy at each guidance step."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.3))
    for i, r in enumerate(results):
        t, label = r.record["details"]["trajectory"], f"{r.record['method']} (seed {r.record['seed']})"
        a.plot(t["step"], t["cosine"], "o-", ms=3, color=f"C{i % 10}", label=label)
        b.plot(t["step"], t["zero_shot"], "o-", ms=3, color=f"C{i % 10}", label=label)
    a.set(xlabel="guidance step", ylabel="mean cosine to the question", title="HyperCLIP guidance")
    b.set(xlabel="guidance step", ylabel="meta-test zero-shot accuracy (%)", title="what it does to accuracy")
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def gamma_sweep(sweep: pd.DataFrame):
    """Fig. 5A: zero-shot accuracy against the guidance scale γ, mean ± s.d. over seeds, per generator
    and descriptor share (`analysis.gamma_table(records, shares=None)`)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, ((gen, share), part) in enumerate(sweep.groupby(["generator", "descriptors"])):
        label = f"{gen} + HyperLDM" + ("" if share == 1.0 else f" ({100 * share:.0f}% descriptors)")
        ax.errorbar(part["γ"], part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3,
                    color=f"C{i % 10}", label=label)
    ax.axvline(1.0, color="0.7", lw=1, ls=":")
    ax.set(xlabel="guidance scale γ (0: unconditional, 1: conditional, >1: classifier-free guidance)",
           ylabel="zero-shot accuracy (%)", title="classifier-free guidance sweep (Fig. 5A)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _paper_gap(acc: float) -> float:
    return gap_closed(acc, PAPER_FLOOR, PAPER_CEILING)


def gamma_sweep_vs_paper(sweep, floor: float, ceiling: float):
    """Fig. 5A on one scale with the paper: the share of the floor-to-ceiling gap closed against γ (ours:
    mean ± s.d. over seeds; the paper's Table 1 points at γ = 1 and 1.5, hollow)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (gen, part) in enumerate(sweep.groupby("generator")):
        ax.errorbar(part["γ"], gap_closed(part["mean"], floor, ceiling),
                    yerr=100 * part["std"].fillna(0) / (ceiling - floor), marker="o", capsize=3, color=f"C{i}",
                    label=f"{gen} + HyperLDM (ours)")
        paper = [(g, PAPER_ZERO_SHOT.get(f"{gen} + HyperLDM γ={g:g}", {}).get("100%")) for g in (1.0, 1.5)]
        paper = [(g, _paper_gap(a)) for g, a in paper if a is not None]
        if paper:
            ax.plot(*zip(*paper), ls="--", marker="o", mfc="none", color=f"C{i}", label=f"{gen} + HyperLDM (paper)")
    ax.axhline(0, color="0.4", lw=1)
    ax.axvline(1.0, color="0.7", lw=1, ls=":")
    ax.set(xlabel="guidance scale γ (0 unconditional, 1 conditional, > 1 classifier-free guidance)",
           ylabel="floor-to-ceiling gap closed (%)",
           title=f"Fig. 5A: γ sweep (ours: floor {floor:.1f}%, ceiling {ceiling:.1f}%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def descriptor_shares(table, floor: float, ceiling: float):
    """Fig. 5B: zero-shot accuracy against the share of training tasks with a descriptor, ours (left,
    accuracy with floor and ceiling marked) and on the paper's scale (right, gap closed; the paper's
    100%/50% numbers from Table 1 hollow)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (method, part) in enumerate(table.groupby("method", sort=False)):
        x, err = 100 * part["share"], part["std"].fillna(0)
        left.errorbar(x, part["mean"], yerr=err, marker="o", capsize=3, color=f"C{i}", label=method)
        right.errorbar(x, gap_closed(part["mean"], floor, ceiling), yerr=100 * err / (ceiling - floor),
                       marker="o", capsize=3, color=f"C{i}", label=f"{method} (ours)")
        paper = [(s, _paper_gap(PAPER_ZERO_SHOT[method][f"{s}%"])) for s in (100, 50)
                 if f"{s}%" in PAPER_ZERO_SHOT.get(method, {})]
        if paper:
            right.plot(*zip(*paper), ls="--", marker="o", mfc="none", color=f"C{i}", label=f"{method} (paper)")
    left.axhline(floor, color="0.4", lw=1, ls="--", label="floor: CLIP as base model")
    left.axhline(ceiling, color="0.4", lw=1, ls=":", label="ceiling: best few-shot")
    left.set(xlabel="training tasks with a descriptor (%)", ylabel="zero-shot accuracy (%)",
             title="Fig. 5B: fewer descriptors (ours)")
    right.axhline(0, color="0.4", lw=1)
    right.set(xlabel="training tasks with a descriptor (%)", ylabel="floor-to-ceiling gap closed (%)",
              title="ours beside the paper")
    for ax in (left, right):
        ax.set_xticks([10, 50, 100])
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
