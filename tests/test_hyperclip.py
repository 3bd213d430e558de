"""HyperCLIP: CLIP_H's contrastive loss and training (task inference), and guidance (Eq. 4)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hyperclip_lib.config import HyperClipConfig
from hyperclip_lib.maml import FineTuned
from hyperclip_lib.models.clip_h import HyperClip, contrastive_loss, guide, task_inference, train_hyperclip
from hyperclip_lib.models.hvae import Standardizer
from hyperclip_lib.models.latent import LatentGenerator


def test_contrastive_loss_is_the_symmetric_cross_entropy_of_scaled_cosines():
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    t = torch.tensor([[2.0, 0.1], [0.5, 0.5], [-0.1, 1.0]])   # not normalised: the loss normalises text
    tn = t / t.norm(dim=-1, keepdim=True)
    s = 10.0
    logits = s * a @ tn.T
    by_row = [-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(3)]
    by_col = [-(logits[i, i] - torch.logsumexp(logits[:, i], 0)) for i in range(3)]
    expected = (sum(by_row) / 3 + sum(by_col) / 3) / 2
    assert contrastive_loss(a, t, s).item() == pytest.approx(expected.item(), rel=1e-6)


def toy_generator(latent: int = 4, n_weights: int = 12, seed: int = 0) -> LatentGenerator:
    A = torch.randn(latent, n_weights, generator=torch.Generator().manual_seed(seed))
    return LatentGenerator("toy", latent, lambda z: torch.tanh(z @ A), torch.zeros(latent))


def test_guidance_raises_the_cosine_and_the_penalty_keeps_z_close():
    g = torch.Generator().manual_seed(0)
    gen = toy_generator()
    model = HyperClip(Standardizer(torch.zeros(12), torch.ones(12)), 16, 5, g)
    text = torch.randn(7, 5, generator=g)
    z0 = torch.randn(7, 4, generator=g)
    cosines = []
    z = guide(gen, model, text, z0, steps=10, lam=0.0, lr=0.1, on_step=lambda k, z, c: cosines.append(c))
    assert len(cosines) == 11 and torch.isfinite(z).all()
    # Small steps of gradient descent on -cos raise every task's cosine.
    assert (cosines[-1] > cosines[0]).all() and (cosines[-1] - cosines[0]).mean() > 0.05, (cosines[0], cosines[-1])
    # At z = z_start the penalty's gradient is finite (|z - z0| is not differentiable there).
    assert torch.isfinite(guide(gen, model, text, z0, steps=1, lam=0.01, lr=0.1)).all()
    far = guide(gen, model, text, z0, steps=10, lam=0.0, lr=0.1)
    near = guide(gen, model, text, z0, steps=10, lam=1.0, lr=0.1)
    assert (near - z0).norm(dim=-1).mean() < (far - z0).norm(dim=-1).mean()


def test_hyperclip_learns_to_infer_the_task_of_a_network(monkeypatch):
    """Networks of task t are a noisy copy of a task-specific code; questions are another view of it."""
    g = torch.Generator().manual_seed(0)
    n_tasks, per_task = 40, 3
    codes = torch.randn(n_tasks, 6, generator=g)
    to_weights, to_text = torch.randn(6, 30, generator=g), torch.randn(6, 8, generator=g)
    task = torch.arange(n_tasks).repeat(per_task)
    weights = codes[task] @ to_weights + 0.1 * torch.randn(len(task), 30, generator=g)
    data = FineTuned(task, weights, weights)
    text = codes @ to_text
    model = HyperClip(Standardizer.fit(weights), 32, 8, g)
    before = task_inference(model, data, text)["top1"]
    history = train_hyperclip(model, data, text, torch.arange(n_tasks),
                              HyperClipConfig(epochs=150, lr=3e-3, batch=16, logit_scale=10.0), seed=0)
    after = task_inference(model, data, text)
    assert history["loss"][-1] < history["loss"][0]
    assert after["top1"] > 60 > 4 * before and after["chance top1"] == pytest.approx(100 / n_tasks)
    # the temperature is learnt, as CLIP's: separable pairs sharpen it from its initial logit scale of 10
    assert history["logit_scale"][0] > 10 and 10 < history["logit_scale"][-1] <= 100
    assert model.logit_scale.item() == pytest.approx(history["logit_scale"][-1])
    # Scored over some rows (the described tasks' networks), in row chunks: as over a copy of just those rows.
    rows = torch.arange(0, len(task), 3)
    subset = FineTuned(task[rows], weights[rows], weights[rows])
    expected = task_inference(model, subset, text)
    monkeypatch.setattr("hyperclip_lib.taskdata.ROW_CHUNK_ELEMENTS", 8 * weights.shape[1])   # chunks of 8 rows
    assert task_inference(model, data, text, rows=rows) == expected
    assert task_inference(model, data, text) == after
