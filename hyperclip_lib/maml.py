"""Adaptation A_T, MAML/FOMAML/multitask training, zero-/few-shot evaluation and the fine-tuned-weights
datasets, all batched over tasks.

The base model is written for a leading task axis, and tasks share no inner variable, so the
gradient of the *sum* of per-task support losses with respect to φ [B, ...] is every task's own
gradient at once: one autograd call per inner step serves the whole meta-batch. With
`create_graph=True` the outer loss differentiates through the inner steps (MAML); without it the
inner gradients are constants and only the identity path φ⁰ → φ_k carries the meta-gradient
(FOMAML, Nichol et al. 2018).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import BaseModelConfig, MethodConfig
from .models.families import AdapterFamily, Family, task_accuracies, task_losses
from .taskdata import Batch, Draw, TaskTensors, size_sorted_chunks


def adapt(family: Family, params: dict, phi: torch.Tensor, batch: Batch, steps: torch.Tensor | int, lr: float,
          second_order: bool = False) -> torch.Tensor:
    """SGD on φ [B, ...] over each task's support set. `steps` [B] lets every task stop after its own
    number of steps (Table 3 samples one per adaptation): a task past its count takes zero-size steps."""
    steps = torch.as_tensor(steps, device=phi.device).expand(len(batch))
    n_max = int(steps.max()) if len(batch) else 0
    if n_max == 0:
        return phi
    create_graph = second_order and torch.is_grad_enabled()
    if not phi.requires_grad:
        phi = phi.detach().requires_grad_(True)
    with torch.enable_grad():
        for k in range(n_max):
            loss = task_losses(family.logits(params, phi, batch.x, batch), batch.labels, batch.support).sum()
            grad, = torch.autograd.grad(loss, phi, create_graph=create_graph)
            active = (k < steps).to(phi.dtype).view(-1, *([1] * (phi.dim() - 1)))
            phi = phi - lr * active * grad
    return phi


def meta_loss(family: Family, params: dict, batch: Batch, training: str, steps: torch.Tensor,
              inner_lr: float) -> torch.Tensor:
    """The outer objective on one meta-batch: mean over tasks of the query loss after adaptation
    (MAML/FOMAML), or of the loss on all drawn samples (multitask: no adaptation)."""
    phi0 = family.start(params, batch)
    if training == "multitask":
        mask = batch.support + batch.query
        return task_losses(family.logits(params, phi0, batch.x, batch), batch.labels, mask).mean()
    if training not in ("maml", "fomaml"):
        raise ValueError(f"training is {training!r}; expected 'multitask', 'maml' or 'fomaml'")
    phi = adapt(family, params, phi0, batch, steps, inner_lr, second_order=training == "maml")
    return task_losses(family.logits(params, phi, batch.x, batch), batch.labels, batch.query).mean()


def clipped_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], max_norm: float) -> float:
    """Clip the gradient norm, then step (the authors' release clipped after the step, a no-op)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return float(norm)


def evaluate(family: Family, params: dict, tasks: TaskTensors, cfg: BaseModelConfig, few_shot_lr: float | None,
             progress: bool = False) -> dict[str, torch.Tensor]:
    """Per-task query accuracy (%) zero-shot and, when `few_shot_lr` is given, after `few_shot_steps`
    of adaptation on each task's support set (A.7). Also the query sizes, for weighted means."""
    zero = torch.empty(len(tasks), device=tasks.labels.device)
    few = zero.clone() if few_shot_lr is not None else None
    for idx in tqdm(size_sorted_chunks(tasks.n_samples, cfg.eval_tasks), desc="evaluate", leave=False,
                    disable=not progress):
        batch = tasks.fixed_batch(idx)
        with torch.no_grad():
            phi0 = family.start(params, batch)
            zero[idx] = task_accuracies(family.logits(params, phi0, batch.x, batch), batch.labels, batch.query)
        if few is not None:
            phi = adapt(family, params, phi0.detach(), batch, cfg.few_shot_steps, few_shot_lr).detach()
            with torch.no_grad():
                few[idx] = task_accuracies(family.logits(params, phi, batch.x, batch), batch.labels, batch.query)
    out = {"zero_shot": zero, "n_query": tasks.n_samples - tasks.n_support}
    if few is not None:
        out["few_shot"] = few
    return out


def train(family: Family, params: dict, training: str, method_cfg: MethodConfig, cfg: BaseModelConfig,
          train_tasks: TaskTensors, pool: torch.Tensor, seed: int, test_tasks: TaskTensors | None = None,
          desc: str = "train", validation: TaskTensors | None = None, select_on: str = "zero_shot") -> dict:
    """Adam on `params` over meta-batches of tasks drawn from `pool` (indices into train_tasks),
    `method_cfg.epochs` passes over the pool. Returns the history: loss per step and, at
    `cfg.curve_points` points, the meta-test zero-shot accuracy (for curves, not for selection).

    With `validation` tasks, the schedule is chosen on them (early stopping): at the start and at the same
    points, their mean `select_on` accuracy ("zero_shot", or "few_shot" after the few-shot adaptation with the
    inner lr); `params` end as they were at the best point (the first, on ties), which the history names."""
    history = {"step": [], "loss": [], "grad_norm": [], "curve_step": [], "curve_zero_shot": []}
    if training == "none":
        return history
    if select_on not in ("zero_shot", "few_shot"):
        raise ValueError(f"select_on is {select_on!r}; expected 'zero_shot' or 'few_shot'")
    best: dict = {}

    def validate(step: int) -> None:
        scores = evaluate(family, params, validation, cfg,
                          few_shot_lr=method_cfg.inner_lr if select_on == "few_shot" else None)
        accuracy = scores[select_on].mean().item()
        history.setdefault("validation_step", []).append(step)
        history.setdefault(f"validation_{select_on}", []).append(accuracy)
        if not best or accuracy > best["accuracy"]:
            best.update(accuracy=accuracy, step=step, params={k: v.detach().clone() for k, v in params.items()})

    rng = torch.Generator().manual_seed(seed)
    leaves = list(params.values())
    optimizer = torch.optim.Adam(leaves, lr=method_cfg.lr)
    per_epoch = math.ceil(len(pool) / cfg.meta_batch)
    total = method_cfg.epochs * per_epoch
    points = set(torch.linspace(0, total, cfg.curve_points + 1).round().long().tolist()[1:])
    checks = points if test_tasks else set()
    step = 0
    if validation is not None:
        validate(0)
    with tqdm(total=total, desc=desc, leave=False) as bar:
        for _ in range(method_cfg.epochs):
            order = pool[torch.randperm(len(pool), generator=rng)]
            for idx in order.split(cfg.meta_batch):
                draw = train_tasks.draw(idx, cfg.samples_per_task, cfg.support_fraction, rng)
                steps = torch.randint(method_cfg.inner_steps_min, method_cfg.inner_steps_max + 1, (len(idx),),
                                      generator=rng)
                optimizer.zero_grad()
                loss = 0.0
                for part in meta_chunks(draw.n_kept, cfg.meta_chunk_samples):   # the mean over tasks, in parts
                    batch = train_tasks.drawn_batch(idx[part], draw[part])
                    chunk_loss = meta_loss(family, params, batch, training, steps[part], method_cfg.inner_lr)
                    if len(part) < len(idx):
                        chunk_loss = chunk_loss * (len(part) / len(idx))
                    chunk_loss.backward()
                    loss += chunk_loss.item()
                norm = clipped_step(optimizer, leaves, cfg.grad_clip)
                step += 1
                history["step"].append(step)
                history["loss"].append(loss)
                history["grad_norm"].append(norm)
                if step in checks:
                    acc = evaluate(family, params, test_tasks, cfg, few_shot_lr=None)
                    history["curve_step"].append(step)
                    history["curve_zero_shot"].append(acc["zero_shot"].mean().item())
                if validation is not None and step in points:
                    validate(step)
                bar.update()
                bar.set_postfix(loss=f"{loss:.3f}")
    if validation is not None:
        with torch.no_grad():
            for k, v in params.items():
                v.copy_(best["params"][k])
        history["chosen_step"] = best["step"]
    return history


def meta_chunks(n_kept: torch.Tensor, max_samples: int | None) -> list[torch.Tensor]:
    """Positions of a meta-batch's tasks in parts whose padded size (tasks × the part's longest draw) stays within
    `max_samples`, grouped by size so a part pads little; one part, in order, when the whole batch fits (or
    None): the meta-gradient is then computed exactly as without parts."""
    everything = torch.arange(len(n_kept))
    if max_samples is None or len(n_kept) * int(n_kept.max()) <= max_samples:
        return [everything]
    parts, current = [], []
    for i in torch.argsort(n_kept.cpu(), stable=True).tolist():   # ascending: the part's newest is its longest
        if current and (len(current) + 1) * int(n_kept[i]) > max_samples:
            parts.append(torch.tensor(current))
            current = []
        current.append(i)
    return parts + [torch.tensor(current)]


@dataclass
class FineTuned:
    """Adapted networks: row m came from task `task[m]` of its split."""
    task: torch.Tensor      # [M]
    latent: torch.Tensor    # [M, Z] the adapted variable (z for the HNet, W itself for the MNet)
    weights: torch.Tensor   # [M, P] the adapter weights it gives

    def to_dict(self) -> dict:
        return {"task": self.task, "latent": self.latent, "weights": self.weights}


def finetune_dataset(family: Family, params: dict, tasks: TaskTensors, per_task: int, steps: int, lr: float,
                     base: BaseModelConfig, seed: int, random_splits: bool = True,
                     desc: str = "fine-tune") -> FineTuned:
    """`per_task` adaptations of every task, batched over tasks: many (task, adapted z or W) samples for
    HyperCLIP, the HVAE and HyperLDM (A.6). With `random_splits`, each adapts on a fresh random 70% of the
    task's data (as training tasks); otherwise on the fixed support set."""
    rows = torch.arange(len(tasks)).repeat(per_task)
    drawn = None
    if random_splits:
        # Every row's split is drawn as it always was (in row order, base.eval_tasks rows per draw); the rows
        # then adapt in chunks of similar size, so a chunk pads to little more than its own tasks' sizes.
        rng = torch.Generator().manual_seed(seed)
        drawn = Draw.cat([tasks.draw(idx, None, base.support_fraction, rng) for idx in rows.split(base.eval_tasks)])
    latent = weights = None
    for pos in tqdm(size_sorted_chunks(tasks.n_samples[rows], base.eval_tasks), desc=desc, leave=False):
        idx = rows[pos]
        batch = tasks.fixed_batch(idx) if drawn is None else tasks.drawn_batch(idx, drawn[pos.to(drawn.columns.device)])
        with torch.no_grad():
            phi0 = family.start(params, batch)
        phi = adapt(family, params, phi0.detach(), batch, steps, lr).detach()
        with torch.no_grad():
            w = family.weights(params, phi)
        if latent is None:
            latent = phi.new_empty(len(rows), *phi.shape[1:])
            # the adapter family's φ is its weights: one tensor serves both, so a cached set holds (and loads) it once
            weights = latent if w is phi else w.new_empty(len(rows), *w.shape[1:])
        latent[pos] = phi
        if weights is not latent:
            weights[pos] = w
    return FineTuned(rows, latent, weights)


def weights_accuracy(adapter: AdapterFamily, weights: torch.Tensor, tasks: TaskTensors, task: torch.Tensor,
                     chunk: int = 256) -> torch.Tensor:
    """Query accuracy (%) of adapter weights `weights[m]` on task `task[m]`'s fixed query set (the
    adapter family's φ is the weights themselves, so it needs no meta-parameters)."""
    out = torch.empty(len(task), device=weights.device)
    for rows in size_sorted_chunks(tasks.n_samples[task], chunk):
        rows = rows.to(task.device)
        batch = tasks.fixed_batch(task[rows])
        with torch.no_grad():
            out[rows] = task_accuracies(adapter.logits({}, weights[rows], batch.x, batch), batch.labels, batch.query)
    return out
