"""Meta-VQA tasks as padded tensors, so a meta-batch of ragged tasks is one set of batched tensors.

Each task holds up to N samples (padded) and up to A answers (padded); masks say which entries are
real. A `Batch` is what the adaptation and the base model read: x [B, N, D], labels [B, N], support
and query masks [B, N], answer-prompt embeddings [B, A, D] with their mask, and the question's text
embedding [B, E].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .features import FeatureStore
from .metavqa import Task


@dataclass
class Batch:
    x: torch.Tensor             # [B, N, D] image features
    labels: torch.Tensor        # [B, N] answer index (0 where padded)
    support: torch.Tensor       # [B, N] float mask of the adaptation samples
    query: torch.Tensor         # [B, N] float mask of the scored samples
    answers: torch.Tensor       # [B, A, D] answer-prompt embeddings
    answer_mask: torch.Tensor   # [B, A] bool, False for padding
    text: torch.Tensor          # [B, E] embedding of the task's question (the descriptor e_i)

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class TaskTensors:
    """A task split as tensors; the first `n_support[i]` samples of task i are its fixed support set."""
    questions: list[str]
    image_features: torch.Tensor   # [N_images, D], shared with the FeatureStore
    image_index: torch.Tensor      # [T, N] rows of image_features (0 where padded)
    labels: torch.Tensor           # [T, N]
    n_samples: torch.Tensor        # [T]
    n_support: torch.Tensor        # [T]
    answers: torch.Tensor          # [T, A, D]
    answer_mask: torch.Tensor      # [T, A]
    text: torch.Tensor             # [T, E]

    @staticmethod
    def from_tasks(features: FeatureStore, tasks: tuple[Task, ...]) -> "TaskTensors":
        if not tasks:
            raise ValueError("TaskTensors.from_tasks: no tasks given")
        n_max = max(len(t.support) + len(t.query) for t in tasks)
        a_max = max(len(features.answers[t.question]) for t in tasks)
        T, D = len(tasks), features.dim
        image_index = torch.zeros(T, n_max, dtype=torch.long)
        labels = torch.zeros(T, n_max, dtype=torch.long)
        answers = torch.zeros(T, a_max, D)
        answer_mask = torch.zeros(T, a_max, dtype=torch.bool)
        for i, t in enumerate(tasks):
            samples = t.support + t.query
            index = {a: k for k, a in enumerate(features.answers[t.question])}
            image_index[i, :len(samples)] = torch.tensor(features.image_rows(img for img, _ in samples))
            labels[i, :len(samples)] = torch.tensor([index[a] for _, a in samples])
            emb = features.answer_embeddings[t.question]
            answers[i, :len(emb)] = emb
            answer_mask[i, :len(emb)] = True
        return TaskTensors(
            questions=[t.question for t in tasks], image_features=features.image_features,
            image_index=image_index, labels=labels,
            n_samples=torch.tensor([len(t.support) + len(t.query) for t in tasks]),
            n_support=torch.tensor([len(t.support) for t in tasks]), answers=answers, answer_mask=answer_mask,
            text=torch.stack([features.question(t.question) for t in tasks]))

    def __len__(self) -> int:
        return len(self.questions)

    def to(self, device: str | torch.device) -> "TaskTensors":
        return TaskTensors(self.questions, *(getattr(self, f).to(device) for f in (
            "image_features", "image_index", "labels", "n_samples", "n_support", "answers", "answer_mask", "text")))

    def _batch(self, idx: torch.Tensor, columns: torch.Tensor, support: torch.Tensor,
               query: torch.Tensor) -> Batch:
        rows = idx[:, None]
        return Batch(x=self.image_features[self.image_index[rows, columns]], labels=self.labels[rows, columns],
                     support=support.float(), query=query.float(), answers=self.answers[idx],
                     answer_mask=self.answer_mask[idx], text=self.text[idx])

    def fixed_batch(self, idx: torch.Tensor) -> Batch:
        """Tasks `idx` with their fixed support/query split (how meta-test tasks are scored)."""
        idx = torch.as_tensor(idx, device=self.labels.device)
        n = int(self.n_samples[idx].max())
        pos = torch.arange(n, device=idx.device)[None]
        columns = pos.expand(len(idx), n)
        valid = pos < self.n_samples[idx, None]
        support = pos < self.n_support[idx, None]
        return self._batch(idx, columns, support, valid & ~support)

    def draw(self, idx: torch.Tensor, samples_per_task: int | None, support_fraction: float,
             generator: torch.Generator) -> "Draw":
        """A fresh random draw of tasks `idx`'s data, split at random into support and query (A.5: 'D_i is
        randomly split into a support set and a query set during training')."""
        idx = torch.as_tensor(idx, device=self.labels.device)
        counts = self.n_samples[idx]
        n = self.image_index.shape[1]
        keys = torch.rand(len(idx), n, generator=generator).to(counts.device)
        keys[torch.arange(n, device=idx.device)[None] >= counts[:, None]] = 2.0   # padding sorts last
        longest = int(counts.max())   # columns past every drawn task's size would be padding only
        take = longest if samples_per_task is None else min(samples_per_task, longest)
        kept = counts.clamp(max=take)
        n_support = (kept * support_fraction).round().long().clamp(1, None)
        n_support = torch.minimum(n_support, (kept - 1).clamp(min=1))   # leave a query sample where possible
        return Draw(keys.argsort(dim=1)[:, :take], kept, n_support)

    def drawn_batch(self, idx: torch.Tensor, draw: "Draw") -> Batch:
        """Tasks `idx` with the samples `draw` took, padded to the longest of them."""
        idx = torch.as_tensor(idx, device=self.labels.device)
        take = int(draw.n_kept.max())
        pos = torch.arange(take, device=idx.device)[None]
        valid = pos < draw.n_kept[:, None]
        support = pos < draw.n_support[:, None]
        return self._batch(idx, draw.columns[:, :take], support & valid, valid & ~support)

    def sample_batch(self, idx: torch.Tensor, samples_per_task: int | None, support_fraction: float,
                     generator: torch.Generator) -> Batch:
        """Tasks `idx`, each a fresh random draw of its data split at random into support and query."""
        return self.drawn_batch(idx, self.draw(idx, samples_per_task, support_fraction, generator))


@dataclass
class Draw:
    """The samples a random draw took of each task: the first `n_kept[i]` of `columns[i]` (positions in the
    task's samples), of which the first `n_support[i]` adapt and the rest are the query."""
    columns: torch.Tensor     # [B, width]
    n_kept: torch.Tensor      # [B]
    n_support: torch.Tensor   # [B]

    def __getitem__(self, rows) -> "Draw":
        return Draw(self.columns[rows], self.n_kept[rows], self.n_support[rows])

    @staticmethod
    def cat(draws: list["Draw"]) -> "Draw":
        width = max(d.columns.shape[1] for d in draws)
        return Draw(torch.cat([F.pad(d.columns, (0, width - d.columns.shape[1])) for d in draws]),
                    torch.cat([d.n_kept for d in draws]), torch.cat([d.n_support for d in draws]))


def size_sorted_chunks(sizes: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    """Positions 0..len(sizes)-1 ordered by size, in chunks of `chunk`: a chunk padded to its largest member
    then wastes little (task sizes have a long tail, max ~10x the median), so scoring costs follow the data,
    not the largest task. Callers write each chunk's results back at its positions."""
    return torch.argsort(sizes.cpu(), stable=True).split(chunk)


# At most this many floats in one chunk of weight vectors (1 GiB): the `paper` adapter has 394,240 weights, so a
# set of 1,740 fine-tuned networks is 2.7 GB and anything computed from all of it at once (standardised copies,
# decoded weights) takes as much again. `ci` and `quick` sets fit in one chunk, so their results are those of one
# pass; a constant, so chunks (and the last bits of what they compute) are the same whatever the machine.
ROW_CHUNK_ELEMENTS = 2 ** 28


def row_chunks(n_rows: int, width: int, max_elements: int | None = None) -> tuple[torch.Tensor, ...]:
    """Row indices 0..n_rows-1 in consecutive chunks of at most `max_elements` (default `ROW_CHUNK_ELEMENTS`)
    / `width` rows (at least one)."""
    return torch.arange(n_rows).split(max(1, (max_elements or ROW_CHUNK_ELEMENTS) // max(1, width)))


def described_tasks(n_tasks: int, fraction: float, seed: int) -> torch.Tensor:
    """Bool mask of the training tasks whose descriptor (question) is kept (paper §6.2, Fig. 5B)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"base.descriptor_fraction is {fraction}; expected a share in (0, 1]")
    keep = max(1, round(fraction * n_tasks))
    order = torch.randperm(n_tasks, generator=torch.Generator().manual_seed(10_000 + seed))
    mask = torch.zeros(n_tasks, dtype=torch.bool)
    mask[order[:keep]] = True
    return mask
