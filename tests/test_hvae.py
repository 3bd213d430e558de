"""The HVAE (ELBO terms, training, principal coordinates), state dicts, and the latent-traversal widget."""
from __future__ import annotations

import math

import pytest
import torch

from hyperclip_lib.config import GeneratorConfig
from hyperclip_lib.models.adapter import AdapterSpec
from hyperclip_lib.models.families import AdapterFamily
from hyperclip_lib.models.hvae import HVAE, PCACoordinates, Standardizer, gaussian_kl, train_hvae
from hyperclip_lib.models.latent import LatentGenerator, principal_directions
from hyperclip_lib.widgets import LatentTraversal


def test_kl_of_a_known_gaussian():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(1,1)||N(0,1)) = 1/2; KL(N(0,4)||N(0,1)) = (4 - 1 - ln 4)/2
    assert gaussian_kl(mu, logvar).item() == pytest.approx(0.5 + (3 - math.log(4)) / 2, rel=1e-6)
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max() == 0


def test_elbo_terms_are_the_gaussian_reconstruction_and_the_kl():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 20, generator=g) * 0.1 + 0.3
    vae = HVAE(Standardizer.fit(W), (16, 8), 3, g)
    terms = vae.elbo_terms(W, torch.Generator().manual_seed(5))
    mu, logvar = vae.encode(W)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    expected_nll = 0.5 * (vae.decoder(z) - (W - W.mean(0)) / W.std(0)).pow(2).sum(-1)
    torch.testing.assert_close(terms["nll"], expected_nll)
    torch.testing.assert_close(terms["kl"], gaussian_kl(mu, logvar))
    torch.testing.assert_close(vae.decode(mu), vae.coordinates.inverse(vae.decoder(mu)))


def test_hvae_training_lowers_the_negative_elbo_on_low_dimensional_weights():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(64, 2, generator=g)
    W = codes @ torch.randn(2, 30, generator=g) + 0.01 * torch.randn(64, 30, generator=g)
    vae = HVAE(Standardizer.fit(W), (32, 16), 2, g)
    history = train_hvae(vae, W, torch.arange(64), GeneratorConfig(hvae_epochs=150, hvae_lr=3e-3, hvae_batch=16,
                                                                   hvae_clip=1000.0, hvae_kl_weight=1.0), seed=0)
    first, last = sum(history["loss"][:8]) / 8, sum(history["loss"][-8:]) / 8
    assert last < 0.5 * first
    with torch.no_grad():
        error = (vae.decode(vae.encode(W)[0]) - W).pow(2).mean() / W.var()
    assert error < 0.2


def test_traversal_sliders_redraw_with_the_values_they_were_given(toy_tasks):
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


def test_hvae_and_its_principal_coordinates_round_trip_through_the_state_dict():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(30, 4, generator=g) @ torch.randn(4, 20, generator=g)
    vae = HVAE(PCACoordinates.fit(W, k=5), (16, 8), 3, g)
    cfg = GeneratorConfig(hvae_hidden1=16, hvae_hidden2=8, hvae_latent=3)
    loaded = HVAE.from_state_dict(vae.state_dict(), cfg)
    assert isinstance(loaded.coordinates, PCACoordinates) and loaded.coordinates.n_coordinates == 5
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(W)[0]), vae.decode(vae.encode(W)[0]))


def test_layers_are_he_normal_from_the_given_generator_and_compute_x_w_plus_b():
    vae = HVAE(Standardizer(torch.zeros(6), torch.ones(6)), (5, 4), 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    first = torch.randn(5, 6, generator=g) * (2 / 6) ** 0.5   # the encoder's first layer is drawn first
    torch.testing.assert_close(vae.encoder[0].weight, first)
    assert vae.encoder[0].bias.abs().max() == 0
    x = torch.randn(3, 6)
    torch.testing.assert_close(vae.encoder[0](x), x @ first.T)


def test_latent_means_in_row_chunks_are_those_of_one_pass(monkeypatch):
    """At `paper` size a fine-tuned set is encoded in chunks of rows; the result must not depend on it."""
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(37, 20, generator=g)
    vae = HVAE(Standardizer.fit(weights), (16, 8), 3, g)
    whole = vae.latent_means(weights)
    monkeypatch.setattr("hyperclip_lib.taskdata.ROW_CHUNK_ELEMENTS", 8 * 20)   # chunks of 8 rows
    torch.testing.assert_close(vae.latent_means(weights), whole, rtol=1e-6, atol=1e-6)   # rounding may differ
    with torch.no_grad():
        assert torch.equal(whole, vae.encode(weights)[0])   # one chunk: exactly one pass
