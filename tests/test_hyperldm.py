"""HyperLDM: the noise schedule, classifier-free guidance, sampling, the EMA and the γ explorer widget."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from hyperclip_lib.config import LDMConfig, get_config
from hyperclip_lib.models.adapter import AdapterSpec
from hyperclip_lib.models.families import AdapterFamily
from hyperclip_lib.models.hvae import Standardizer
from hyperclip_lib.models.hyperldm import (SAMPLER_STEPS, HyperLDMNet, TrainedLDM, guided_noise, ldm_sampler,
                                           make_scheduler, sample, train_ldm, update_ema)
from hyperclip_lib.models.latent import LatentGenerator
from hyperclip_lib.stages.hyperldm import sample_and_score, tasks_by_guidance
from hyperclip_lib.widgets import GammaExplorer


def test_add_noise_is_the_closed_form_of_the_papers_linear_schedule():
    sched = make_scheduler("ddpm", 350, 1e-4, 0.06)
    betas = np.linspace(1e-4, 0.06, 350)
    alpha_bar = np.cumprod(1 - betas)
    x0, eps = torch.randn(5, 3), torch.randn(5, 3)
    t = torch.tensor([0, 10, 100, 200, 349])
    expected = (torch.tensor(alpha_bar[t.numpy()], dtype=torch.float32).sqrt()[:, None] * x0
                + torch.tensor(1 - alpha_bar[t.numpy()], dtype=torch.float32).sqrt()[:, None] * eps)
    torch.testing.assert_close(sched.add_noise(x0, eps, t), expected, rtol=1e-5, atol=1e-6)
    assert alpha_bar[-1] < 1e-4   # the last step is almost pure noise


def test_gamma_zero_and_one_give_exactly_the_unconditional_and_conditional_predictions():
    torch.manual_seed(0)
    net = HyperLDMNet(4, 6, (16, 32, 16), time_dim=10)
    nn.init.normal_(net.output.weight)   # the output layer starts at zero; make predictions nontrivial
    z, t, e = torch.randn(3, 4), torch.tensor([1, 5, 9]), torch.randn(3, 6)
    with torch.no_grad():
        # The one batched pass holds both predictions; γ = 0 and 1 return its halves bit for bit.
        uncond, cond = net(torch.cat([z, z]), torch.cat([t, t]), torch.cat([torch.zeros_like(e), e])).chunk(2)
        assert torch.equal(guided_noise(net, z, t, e, torch.zeros(3)), uncond)
        assert torch.equal(guided_noise(net, z, t, e, torch.ones(3)), cond)
        mixed = guided_noise(net, z, t, e, torch.tensor([0.0, 1.5, 3.0]))
        torch.testing.assert_close(mixed[1], -0.5 * uncond[1] + 1.5 * cond[1], rtol=1e-6, atol=1e-6)
        # ...and they are what separate unconditional and conditional calls predict.
        torch.testing.assert_close(uncond, net(z, t, torch.zeros_like(e)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cond, net(z, t, e), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(uncond, cond)


class PerfectGaussianNoise(nn.Module):
    """The exact E[ε | z_t] when z_0 ~ N(m, v) and z_t = √ᾱ z_0 + √(1−ᾱ) ε."""

    def __init__(self, alpha_bar: torch.Tensor, m: float, v: float):
        super().__init__()
        self.alpha_bar, self.m, self.v = alpha_bar, m, v

    def forward(self, z, t, e):
        a = self.alpha_bar[t][:, None]
        return (1 - a).sqrt() / (a * self.v + 1 - a) * (z - a.sqrt() * self.m)


@pytest.mark.parametrize("kind,steps,var_tolerance", [
    # measured variance error with this seed in brackets; the tolerance leaves room for float noise only
    ("ddpm", None, 0.06),             # [-3.8%]
    ("ddim", 350, 0.06),
    ("ddim", None, 0.2),              # 35 steps, ten times fewer deterministic steps [-14.3%]
    ("dpmsolver++", None, 0.1),       # 20 steps [-7.0%]
    ("sde-dpmsolver++", None, 0.06),  # 20 steps [-3.7%]: as close as full DDPM
    ("unipc", None, 0.1),             # 20 steps [-6.3%]
])
def test_sampling_with_a_perfect_noise_predictor_recovers_a_gaussian(kind, steps, var_tolerance):
    """Every sampler at its default step count (`steps` None) against the exact score of a Gaussian."""
    sched = make_scheduler(kind, 350, 1e-4, 0.06)
    steps = steps or SAMPLER_STEPS[kind]
    m, v = 1.5, 0.25
    perfect = PerfectGaussianNoise(sched.alphas_cumprod, m, v)
    ldm = TrainedLDM(net=None, ema=perfect, scale=Standardizer(torch.zeros(1), torch.ones(1)), history={})
    z = sample(ldm, torch.zeros(20_000, 2), torch.ones(20_000), sched, steps, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(m, abs=0.02)
    assert z.var().item() == pytest.approx(v, rel=var_tolerance)


def test_ldm_sampler_reads_the_config_and_names_unknown_samplers():
    L = get_config("ci").ldm
    assert ldm_sampler(L, "ddpm")[1] is None and ldm_sampler(L, "unipc")[1] == SAMPLER_STEPS["unipc"]
    L = dataclasses.replace(L, sampler="sde-dpmsolver++", sampler_steps=7)
    scheduler, steps = ldm_sampler(L)
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler" and steps == 7
    assert scheduler.config.algorithm_type == "sde-dpmsolver++" and ldm_sampler(L, "ddim")[1] == SAMPLER_STEPS["ddim"]
    with pytest.raises(ValueError, match="ldm.sampler is 'euler'; expected one of ddpm, ddim"):
        ldm_sampler(dataclasses.replace(L, sampler="euler"))


@pytest.mark.parametrize("kind", ["sde-dpmsolver++", "unipc"])
def test_samples_repeat_with_their_generator_seed(kind):
    """The SDE solver draws its noise from the generator; UniPC (no generator argument) is deterministic."""
    torch.manual_seed(0)
    ema = HyperLDMNet(2, 3, (8, 8, 8), 4)
    nn.init.normal_(ema.output.weight, std=0.3)
    ldm = TrainedLDM(None, ema, Standardizer(torch.zeros(2), torch.ones(2)), {})
    scheduler = make_scheduler(kind, 50, 1e-4, 0.06)
    cond, gamma = torch.randn(4, 3), torch.full((4,), 1.5)
    draw = lambda seed: sample(ldm, cond, gamma, scheduler, 10, torch.Generator().manual_seed(seed))
    first = draw(1)
    torch.testing.assert_close(first, draw(1))
    assert not torch.allclose(first, draw(2))


def test_sampling_uses_the_ema_weights_and_the_ema_follows_its_formula():
    sched = make_scheduler("ddim", 50, 1e-4, 0.06)
    torch.manual_seed(0)
    net, ema = HyperLDMNet(2, 3, (8, 8, 8), 4), HyperLDMNet(2, 3, (8, 8, 8), 4)
    nn.init.normal_(ema.output.weight)
    ldm = TrainedLDM(net, ema, Standardizer(torch.zeros(2), torch.ones(2)), {})
    cond, gamma = torch.randn(4, 3), torch.ones(4)
    default = sample(ldm, cond, gamma, sched, 10, torch.Generator().manual_seed(1))
    torch.testing.assert_close(default, sample(ldm, cond, gamma, sched, 10, torch.Generator().manual_seed(1), net=ema))
    assert not torch.allclose(default, sample(ldm, cond, gamma, sched, 10, torch.Generator().manual_seed(1), net=net))
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, net, decay=0.9)
    for b, e, p in zip(before, ema.parameters(), net.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)


def test_training_learns_a_condition_dependent_latent_distribution():
    """Two conditions, two latent clusters: the conditional samples land on their own cluster."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 1.0]])
    task = torch.arange(2).repeat(300)
    latents = centers[task] + 0.3 * torch.randn(600, 2, generator=g)
    cond = torch.eye(2)[task]
    L = LDMConfig(width1=64, width2=64, width3=64, time_dim=16, train_steps=100, beta_start=1e-4, beta_end=0.1,
                  steps=1500, batch=128, lr=2e-3, cond_dropout=0.2, ema_decay=0.99, grad_clip=10.0)
    ldm = train_ldm(latents, cond, torch.ones(600, dtype=torch.bool), L, seed=0)
    assert sum(ldm.history["loss"][-100:]) < sum(ldm.history["loss"][:100])
    z = sample(ldm, torch.eye(2).repeat_interleave(200, 0), torch.full((400,), 1.5), make_scheduler("ddim", 100, 1e-4, 0.1),
               25, torch.Generator().manual_seed(1))
    first, second = z[:200].mean(0), z[200:].mean(0)
    assert (first - centers[0]).norm() < 1.0 and (second - centers[1]).norm() < 1.0


def test_gammas_parse_and_bad_ones_are_named():
    assert get_config("ci", {"ldm.gammas": "0, 1,1.5"}).ldm.gammas == (0.0, 1.0, 1.5)
    assert get_config("ci", {"ldm.gammas": [0, 2]}).ldm.gammas == (0.0, 2.0)   # papermill passes lists
    with pytest.raises(ValueError, match="ldm.gammas"):
        get_config("ci", {"ldm.gammas": "1,high"})


def test_a_trained_ldm_round_trips_through_its_state_dict():
    latents, cond = torch.randn(40, 3), torch.randn(40, 5)
    L = LDMConfig(width1=8, width2=16, width3=8, time_dim=6, train_steps=20, steps=5, batch=8)
    ldm = train_ldm(latents, cond, torch.ones(40, dtype=torch.bool), L, seed=0)
    loaded = TrainedLDM.from_state_dict(ldm.state_dict(), L, cond_dim=5, history=ldm.history)
    sched = make_scheduler("ddim", 20, L.beta_start, L.beta_end)
    args = (cond[:6], torch.full((6,), 1.5), sched, 5)
    torch.testing.assert_close(sample(loaded, *args, torch.Generator().manual_seed(2)),
                               sample(ldm, *args, torch.Generator().manual_seed(2)))
    torch.testing.assert_close(loaded.scale.mean, latents.mean(0))


def test_gamma_slider_redraws_for_the_gamma_it_was_given(toy_tasks):
    tasks = toy_tasks(4)
    spec = AdapterSpec(8, 4)
    A = torch.randn(2, spec.n_params, generator=torch.Generator().manual_seed(0)) * 0.5
    gen = LatentGenerator("toy", 2, lambda z: z @ A)
    calls = []

    def sampler(cond, gamma, generator):   # a stand-in whose samples move with γ
        calls.append(gamma.clone())
        return gamma[:, None] * torch.ones(len(gamma), 2) + 0.1 * torch.randn(len(gamma), 2, generator=generator)

    names = [[f"answer {k}" for k in range(int(m.sum()))] for m in tasks.answer_mask]
    view = GammaExplorer(sampler, gen, AdapterFamily(spec), tasks, names, torch.randn(30, 2), n_samples=3)
    assert view.state["gamma"] == 1.0 and torch.equal(calls[-1], torch.ones(3))
    first = dict(view.state)
    view.gamma.value = 3.5
    assert view.state["gamma"] == 3.5 and torch.equal(calls[-1], torch.full((3,), 3.5))
    assert view.state["predicted"] != first["predicted"] or view.state["accuracy"] != first["accuracy"]
    assert "γ = 3.5" in view.figure.axes[0].get_title()
    assert f"γ = 3.5: accuracy {view.state['accuracy']:.1f}%" in view.readout.value
    assert 0 < view.state["seconds"] < 60 and f"drawn in {view.state['seconds']:.2f} s" in view.readout.value
    assert GammaExplorer(sampler, gen, AdapterFamily(spec), tasks, names, torch.randn(30, 2), task=2).state["task"] == 2


def test_the_gamma_explorer_can_open_on_the_task_guidance_moves_most(toy_tasks):
    samples = {"task": torch.tensor([0, 1, 2, 0, 1, 2]), "gamma": torch.tensor([0.0, 0, 0, 3, 3, 3]),
               "accuracy": torch.tensor([50.0, 40, 70, 55, 10, 72])}   # task 1 drops 30 points from γ 0 to 3
    assert tasks_by_guidance(samples, [0.0, 3.0], 3) == [1, 0, 2]
    # the explorer checks candidates with its own draws: here γ only moves the networks of task 2's question
    tasks = toy_tasks(4)
    spec = AdapterSpec(8, 4)
    A = torch.randn(2, spec.n_params, generator=torch.Generator().manual_seed(0)) * 0.5
    gen = LatentGenerator("toy", 2, lambda z: z @ A)

    def sampler(cond, gamma, generator):
        moves = (cond == tasks.text[2]).all(-1).float()[:, None]
        return 2 * gamma[:, None] * moves * torch.ones(len(gamma), 2) + 0.1 * torch.randn(len(gamma), 2, generator=generator)

    names = [[f"answer {k}" for k in range(int(m.sum()))] for m in tasks.answer_mask]
    view = GammaExplorer(sampler, gen, AdapterFamily(spec), tasks, names, torch.randn(30, 2), n_samples=3)
    accuracy = lambda task, gamma: np.mean([r["accuracy"] for r in view.draw_networks(task, gamma)[1]])
    assert accuracy(2, 0.0) != accuracy(2, 4.0) and accuracy(0, 0.0) == accuracy(0, 4.0)
    assert view.most_moved_task([0, 1, 2, 3]) == 2


def test_sampled_networks_scored_in_row_chunks_score_as_in_one_pass(toy_tasks, monkeypatch):
    """At `paper` size every sample's decoded weights at once take GBs, so they are decoded and scored in chunks
    of rows; the accuracies must not depend on it."""
    tasks = toy_tasks(5)
    spec = AdapterSpec(8, 4)
    torch.manual_seed(0)
    A = torch.randn(2, spec.n_params, generator=torch.Generator().manual_seed(0)) * 0.5
    gen = LatentGenerator("toy", 2, lambda z: z @ A)
    ema = HyperLDMNet(2, tasks.text.shape[1], (8, 8, 8), 4)
    nn.init.normal_(ema.output.weight, std=0.3)
    ldm = TrainedLDM(None, ema, Standardizer(torch.zeros(2), torch.ones(2)), {})
    score = lambda: sample_and_score(ldm, gen, AdapterFamily(spec), tasks, [0.0, 1.5, 3.0], 3,
                                     make_scheduler("ddim", 50, 1e-4, 0.06), 10, seed=1)
    whole = score()
    monkeypatch.setattr("hyperclip_lib.taskdata.ROW_CHUNK_ELEMENTS", 8 * spec.n_params)   # 45 rows in chunks of 8
    chunked = score()
    assert all(torch.equal(whole[k], chunked[k]) for k in whole)
    assert 0 <= whole["accuracy"].min() and whole["accuracy"].max() <= 100 and whole["accuracy"].std() > 0
