"""HVAE ELBO terms, HyperCLIP's contrastive loss and guidance, and the latent-traversal widget."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hyperclip_lib.adapter import AdapterSpec
from hyperclip_lib.generators import (HVAE, FineTuned, LatentGenerator, PCACoordinates, Standardizer, gaussian_kl, mlp,
                                      train_hvae)
from hyperclip_lib.hyperclip import HyperClip, contrastive_loss, guide, task_inference, train_hyperclip
from hyperclip_lib.methods import AdapterFamily
from hyperclip_lib.widgets import LatentTraversal, principal_directions
from test_meta import toy_tasks


def test_kl_of_a_known_gaussian():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(1,1)||N(0,1)) = 1/2; KL(N(0,4)||N(0,1)) = (4 - 1 - ln 4)/2
    assert gaussian_kl(mu, logvar).item() == pytest.approx(0.5 + (3 - math.log(4)) / 2, rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0


def test_elbo_terms_are_the_gaussian_reconstruction_and_the_kl():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 20, generator=g) * 0.1 + 0.3
    vae = HVAE.create(20, (16, 8), 3, Standardizer.fit(W), g)
    terms = vae.elbo_terms(W, torch.Generator().manual_seed(5))
    mu, logvar = vae.encode(W)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    expected_nll = 0.5 * (mlp(vae.params, "dec", z) - (W - W.mean(0)) / W.std(0)).pow(2).sum(-1)
    torch.testing.assert_close(terms["nll"], expected_nll)
    torch.testing.assert_close(terms["kl"], gaussian_kl(mu, logvar))
    torch.testing.assert_close(vae.decode(mu), vae.scale.inverse(mlp(vae.params, "dec", mu)))


def test_hvae_training_lowers_the_negative_elbo_on_low_dimensional_weights():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(64, 2, generator=g)
    W = codes @ torch.randn(2, 30, generator=g) + 0.01 * torch.randn(64, 30, generator=g)
    vae = HVAE.create(30, (32, 16), 2, Standardizer.fit(W), g)
    vae.params = {k: v.requires_grad_(True) for k, v in vae.params.items()}
    history = train_hvae(vae, W, torch.arange(64), epochs=150, lr=3e-3, batch_size=16, clip=1000.0,
                         kl_weight=1.0, seed=0)
    first, last = sum(history["loss"][:8]) / 8, sum(history["loss"][-8:]) / 8
    assert last < 0.5 * first
    with torch.no_grad():
        error = (vae.decode(vae.encode(W)[0]) - W).pow(2).mean() / W.var()
    assert error < 0.2


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
    model = HyperClip.create(12, 16, 5, Standardizer(torch.zeros(12), torch.ones(12)), g)
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


def test_hyperclip_learns_to_infer_the_task_of_a_network():
    """Networks of task t are a noisy copy of a task-specific code; questions are another view of it."""
    g = torch.Generator().manual_seed(0)
    n_tasks, per_task = 40, 3
    codes = torch.randn(n_tasks, 6, generator=g)
    to_weights, to_text = torch.randn(6, 30, generator=g), torch.randn(6, 8, generator=g)
    task = torch.arange(n_tasks).repeat(per_task)
    weights = codes[task] @ to_weights + 0.1 * torch.randn(len(task), 30, generator=g)
    data = FineTuned(task, weights, weights)
    text = codes @ to_text
    model = HyperClip.create(30, 32, 8, Standardizer.fit(weights), g)
    model.params = {k: v.requires_grad_(True) for k, v in model.params.items()}
    before = task_inference(model, data, text)["top1"]
    history = train_hyperclip(model, data, text, torch.arange(n_tasks), epochs=150, lr=3e-3, batch_size=16,
                              logit_scale=10.0, seed=0)
    after = task_inference(model, data, text)
    assert history["loss"][-1] < history["loss"][0]
    assert after["top1"] > 60 > 4 * before and after["chance top1"] == pytest.approx(100 / n_tasks)


def test_traversal_sliders_redraw_with_the_values_they_were_given():
    tasks = toy_tasks(5)
    spec = AdapterSpec(8, 4)
    family = AdapterFamily(spec)
    A = torch.randn(3, spec.n_params, generator=torch.Generator().manual_seed(0)) * 0.5
    gen = LatentGenerator("toy", 3, lambda z: z @ A)
    latents = torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * torch.tensor([3.0, 1.0, 0.2])
    names = [[f"answer {k}" for k in range(int(m.sum()))] for m in tasks.answer_mask]
    view = LatentTraversal(gen, latents, family, tasks, names, n_directions=2)
    start = dict(view.state)
    assert start["coefficients"] == [0.0, 0.0] and abs(sum(start["predicted"]) - 1) < 1e-6
    view.sliders[0].value = 2.5
    assert view.state["coefficients"] == [2.5, 0.0]
    assert "PC1 +2.5" in view.readout.value and f"accuracy {view.state['accuracy']:.1f}%" in view.readout.value
    mean, dirs, spread = principal_directions(latents, 2)
    torch.testing.assert_close(view.latent(), mean + 2.5 * spread[0] * dirs[0])
    assert view.state["predicted"] != start["predicted"] or view.state["accuracy"] != start["accuracy"]
    view.task.value = 3
    assert view.state["task"] == 3 and view.state["true"] != start["true"]
    assert "accuracy" in view.figure.axes[0].get_title()


def test_principal_coordinates_round_trip_weights_in_their_span():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 3, generator=g) @ torch.randn(3, 25, generator=g) + torch.randn(25, generator=g)
    coords = PCACoordinates.fit(W, k=3)
    c = coords(W)
    assert c.shape == (40, 3)
    torch.testing.assert_close(coords.inverse(c), W, atol=1e-4, rtol=1e-4)
    assert c.pow(2).mean().item() == pytest.approx(1.0, rel=0.05)   # one common scale: unit mean variance
