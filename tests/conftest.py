"""Shared test fixtures: a learnable toy meta-learning problem as TaskTensors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperclip_lib.taskdata import TaskTensors


def make_toy_tasks(n_tasks: int, dim: int = 8, n_concepts: int = 4, seed: int = 0, rule_seed: int = 99) -> TaskTensors:
    """Tasks sharing one hidden rule: an image's label is the answer whose embedding best matches
    M·x for a fixed random M. Plain CLIP (M = I) is near chance; one shared adapter can learn M."""
    g, rule = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(rule_seed)
    M = torch.linalg.qr(torch.randn(dim, dim, generator=rule))[0]
    concepts = F.normalize(torch.randn(n_concepts, dim, generator=rule), dim=-1)
    n_images, n = 400, 30
    images = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    n_answers = torch.randint(2, n_concepts + 1, (n_tasks,), generator=g)
    answers = torch.zeros(n_tasks, n_concepts, dim)
    answer_mask = torch.arange(n_concepts)[None] < n_answers[:, None]
    image_index = torch.randint(0, n_images, (n_tasks, n), generator=g)
    labels = torch.zeros(n_tasks, n, dtype=torch.long)
    for t in range(n_tasks):
        chosen = torch.randperm(n_concepts, generator=g)[:int(n_answers[t])]
        answers[t, :len(chosen)] = concepts[chosen]
        labels[t] = (images[image_index[t]] @ M.T @ concepts[chosen].T).argmax(-1)
    sizes = torch.randint(20, n + 1, (n_tasks,), generator=g)
    return TaskTensors([f"toy {t}" for t in range(n_tasks)], images, image_index, labels, sizes,
                       (sizes * 0.7).round().long(), answers, answer_mask, F.normalize(torch.randn(n_tasks, 6, generator=g), dim=-1))


@pytest.fixture
def toy_tasks():
    """`toy_tasks(n_tasks, dim=8, ...)`: tasks sharing one hidden rule (see `make_toy_tasks`)."""
    return make_toy_tasks
