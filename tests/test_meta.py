"""Adaptation, MAML/FOMAML meta-gradients, training, the model families and the baseline stage."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hyperclip_lib.models.adapter import AdapterSpec, adapter_logits
from hyperclip_lib.config import BaseModelConfig, MethodConfig
from hyperclip_lib.maml import adapt, clipped_step, evaluate, finetune_dataset, meta_loss, train, weights_accuracy
from hyperclip_lib.models.families import RECIPES, AdapterFamily, FiLMFamily, HyperNetFamily, make_family, task_losses
from hyperclip_lib.stages.baselines import selection_metric
from hyperclip_lib.taskdata import Batch, described_tasks


def leaf_params(family, seed=0, dtype=torch.float32):
    return {k: v.to(dtype).requires_grad_(True) for k, v in family.init_params(torch.Generator().manual_seed(seed)).items()}


def as_dtype(batch: Batch, dtype) -> Batch:
    return Batch(*(t.to(dtype) if t.is_floating_point() else t for t in vars(batch).values()))


# --- task tensors -------------------------------------------------------------------------------

def test_random_draws_split_each_task_into_disjoint_support_and_query_within_its_samples(toy_tasks):
    tasks = toy_tasks(6)
    batch = tasks.sample_batch(torch.arange(6), samples_per_task=24, support_fraction=0.7,
                               generator=torch.Generator().manual_seed(0))
    kept = tasks.n_samples.clamp(max=24).float()
    assert torch.equal((batch.support * batch.query).sum(1), torch.zeros(6))
    assert torch.equal(batch.support.sum(1) + batch.query.sum(1), kept)
    assert torch.equal(batch.support.sum(1), (kept * 0.7).round())
    fixed = tasks.fixed_batch(torch.arange(6))
    assert torch.equal(fixed.support.sum(1), tasks.n_support.float())
    assert torch.equal(fixed.query.sum(1), (tasks.n_samples - tasks.n_support).float())


def test_descriptor_fraction_keeps_that_share_of_tasks_and_rejects_nonsense():
    mask = described_tasks(100, 0.5, seed=0)
    assert mask.sum() == 50 and not torch.equal(mask, described_tasks(100, 0.5, seed=1))
    with pytest.raises(ValueError, match="descriptor_fraction"):
        described_tasks(10, 0.0, seed=0)


# --- adaptation and meta-gradients --------------------------------------------------------------

def plain_maml_gradient(spec, W0, tasks: Batch, steps: int, lr: float) -> torch.Tensor:
    """MAML written the textbook way: one task at a time, autograd with create_graph."""
    W0 = W0.detach().requires_grad_(True)
    total = 0.0
    for i in range(len(tasks)):
        a = int(tasks.answer_mask[i].sum())
        s, q = tasks.support[i].bool(), tasks.query[i].bool()
        ans = tasks.answers[i, :a]
        W = W0
        for _ in range(steps):
            loss = F.cross_entropy(adapter_logits(tasks.x[i][s], W, spec, ans), tasks.labels[i][s])
            W = W - lr * torch.autograd.grad(loss, W, create_graph=True)[0]
        total = total + F.cross_entropy(adapter_logits(tasks.x[i][q], W, spec, ans), tasks.labels[i][q])
    (total / len(tasks)).backward()
    return W0.grad


def test_batched_maml_meta_gradient_equals_plain_autograd_on_ragged_tasks(toy_tasks):
    spec = AdapterSpec(8, 5)
    family = AdapterFamily(spec)
    params = leaf_params(family, dtype=torch.float64)
    with torch.no_grad():
        params["W"].add_(0.3 * torch.randn(spec.n_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    batch = as_dtype(toy_tasks(5).fixed_batch(torch.arange(5)), torch.float64)
    meta_loss(family, params, batch, "maml", torch.full((5,), 3), inner_lr=0.05).backward()
    expected = plain_maml_gradient(spec, params["W"], batch, steps=3, lr=0.05)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(params["W"].grad, expected, rtol=1e-9, atol=1e-12)


def test_fomaml_differs_from_maml_exactly_by_the_second_order_term(toy_tasks):
    """One inner step: ∇_MAML = (I − lr·H_s) ∇L_q(W₁) and ∇_FOMAML = ∇L_q(W₁), H_s the support Hessian."""
    spec, lr = AdapterSpec(6, 4), 0.1
    family = AdapterFamily(spec)
    batch = as_dtype(toy_tasks(1, dim=6).fixed_batch(torch.arange(1)), torch.float64)
    grads = {}
    for mode in ("maml", "fomaml"):
        params = leaf_params(family, dtype=torch.float64)
        with torch.no_grad():
            params["W"].add_(0.5 * torch.randn(spec.n_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
        meta_loss(family, params, batch, mode, torch.ones(1, dtype=torch.long), lr).backward()
        grads[mode] = params["W"].grad
    W0 = params["W"].detach()

    def loss_on(mask):
        return lambda W: task_losses(family.logits({"W": W}, W[None], batch.x, batch), batch.labels, mask).sum()

    support_loss, query_loss = loss_on(batch.support), loss_on(batch.query)
    W1 = (W0 - lr * torch.autograd.grad(support_loss(W0.requires_grad_(True)), W0)[0]).detach()
    query_grad = torch.autograd.grad(query_loss(W1.requires_grad_(True)), W1)[0]
    hvp = torch.autograd.functional.hvp(support_loss, W0.detach(), query_grad)[1]
    torch.testing.assert_close(grads["fomaml"], query_grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads["maml"], query_grad - lr * hvp, rtol=1e-8, atol=1e-12)
    assert (grads["maml"] - grads["fomaml"]).abs().max() > 1e-6


def test_each_task_stops_after_its_own_number_of_inner_steps(toy_tasks):
    spec = AdapterSpec(8, 5)
    family = AdapterFamily(spec)
    params = leaf_params(family)
    batch = toy_tasks(3).fixed_batch(torch.arange(3))
    phi0 = family.start(params, batch).detach()
    both = adapt(family, params, phi0, batch, torch.tensor([0, 2, 4]), lr=0.05).detach()
    alone = adapt(family, params, phi0[2:], Batch(*(t[2:] for t in vars(batch).values())), 4, lr=0.05).detach()
    assert torch.equal(both[0], phi0[0])
    assert not torch.equal(both[1], phi0[1])
    torch.testing.assert_close(both[2], alone[0])


def test_gradient_clipping_happens_before_the_optimiser_step():
    w = torch.zeros(3, requires_grad=True)
    seen = []
    opt = torch.optim.SGD([w], lr=1.0)
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(w.grad.norm().item()))
    w.grad = torch.tensor([30.0, 40.0, 0.0])
    norm = clipped_step(opt, [w], max_norm=10.0)
    assert norm == pytest.approx(50.0)
    assert seen == [pytest.approx(10.0)]
    torch.testing.assert_close(w.detach(), torch.tensor([-6.0, -8.0, 0.0]))


# --- the families --------------------------------------------------------------------------------

def test_hypernetworks_make_adapter_weights_of_the_right_shape_and_scale(toy_tasks):
    spec = AdapterSpec(32, 16)
    batch = toy_tasks(4, dim=32).fixed_batch(torch.arange(4))
    for family in (HyperNetFamily(spec, 64, 128, conditional=False), HyperNetFamily(spec, 6, 128, conditional=True)):
        params = family.init_params(torch.Generator().manual_seed(0))
        W = family.weights(params, family.start(params, batch))
        assert W.shape == (4, spec.n_params)
        parts = spec.unflatten(W)
        # NTK parametrisation: a generated tensor's scale is ~1/sqrt(fan_in) of the layer it is for.
        for name, fan_in in (("W1", spec.dim), ("W2", spec.hidden)):
            assert 0.5 < parts[name].std().item() * math.sqrt(fan_in) < 3.0, name
        assert family.logits(params, family.start(params, batch), batch.x, batch).isfinite().all()
    uncond = HyperNetFamily(spec, 64, 128, conditional=False)
    params = uncond.init_params(torch.Generator().manual_seed(0))
    W = uncond.weights(params, uncond.start(params, batch))
    assert torch.equal(W[0], W[3])   # one z⁰ for every task


def test_film_starts_as_the_plain_adapter_and_then_depends_on_the_question(toy_tasks):
    spec = AdapterSpec(8, 5)
    family = FiLMFamily(spec, text_dim=6)
    params = leaf_params(family)
    batch = toy_tasks(3).fixed_batch(torch.arange(3))
    e = family.start(params, batch)
    plain = adapter_logits(batch.x, params["W"], spec, batch.answers)
    out = family.logits(params, e, batch.x, batch)
    assert out.shape == plain.shape
    torch.testing.assert_close(out[batch.answer_mask[:, None, :].expand_as(out)],
                               plain[batch.answer_mask[:, None, :].expand_as(plain)])
    with torch.no_grad():
        params["film.W"].normal_(generator=torch.Generator().manual_seed(0))
    moved = family.logits(params, e, batch.x, batch)
    assert not torch.allclose(moved, out)


# --- training on a learnable toy -------------------------------------------------------------------

def toy_setup(method: str):
    family = make_family(RECIPES[method], AdapterSpec(8, 16), text_dim=6, hnet_hidden=32, hnet_latent=8)
    base = BaseModelConfig(hidden=16, meta_batch=8, samples_per_task=None, few_shot_steps=30, curve_points=0)
    return family, base


@pytest.mark.parametrize("method,cfg", [
    ("Uncond. Multitask", MethodConfig(epochs=40, lr=1e-2, inner_lr=0.05)),
    ("Uncond. MNet-MAML", MethodConfig(epochs=25, lr=1e-2, inner_lr=0.05, inner_steps_max=3)),
])
def test_multitask_and_maml_beat_chance_on_held_out_toy_tasks(method, cfg, toy_tasks):
    family, base = toy_setup(method)
    train_tasks, test_tasks = toy_tasks(48, seed=0), toy_tasks(24, seed=1)
    params = leaf_params(family)
    chance = (100 / test_tasks.answer_mask.sum(1).float()).mean().item()
    before = evaluate(family, params, test_tasks, base, few_shot_lr=None)["zero_shot"].mean().item()
    history = train(family, params, RECIPES[method].training, cfg, base, train_tasks, torch.arange(48), seed=0)
    scores = evaluate(family, params, test_tasks, base, few_shot_lr=cfg.inner_lr)
    zero, few = scores["zero_shot"].mean().item(), scores["few_shot"].mean().item()
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5])
    assert zero > chance + 20 and zero > before + 15, (chance, before, zero)
    assert few > chance + 20


def test_scores_do_not_depend_on_how_tasks_are_chunked_and_padded(toy_tasks):
    """evaluate and weights_accuracy score tasks in size-sorted chunks; each task's result lands at its own
    position and equals scoring it alone (no padding)."""
    family, base = toy_setup("Uncond. Multitask")
    tasks, params = toy_tasks(23, seed=3), leaf_params(family, seed=1)
    with torch.no_grad():
        params["W"].normal_(std=0.1, generator=torch.Generator().manual_seed(2))
    alone = evaluate(family, params, tasks, dataclasses.replace(base, eval_tasks=1), few_shot_lr=0.05)
    chunked = evaluate(family, params, tasks, dataclasses.replace(base, eval_tasks=5), few_shot_lr=0.05)
    for metric in ("zero_shot", "few_shot"):
        torch.testing.assert_close(chunked[metric], alone[metric])
    assert alone["few_shot"].mean() > alone["zero_shot"].mean()   # the adaptation did something to compare
    task = torch.tensor([4, 0, 22, 4, 9, 13])
    weights = params["W"].detach() + 0.1 * torch.randn(len(task), family.spec.n_params,
                                                        generator=torch.Generator().manual_seed(4))
    one_by_one = torch.cat([weights_accuracy(family, weights[i:i + 1], tasks, task[i:i + 1]) for i in range(len(task))])
    torch.testing.assert_close(weights_accuracy(family, weights, tasks, task, chunk=4), one_by_one)


def test_finetuned_set_rows_are_their_tasks_own_adaptations_and_adapter_weights_are_stored_once(toy_tasks, tmp_path):
    family, base = toy_setup("Uncond. Multitask")
    tasks, params = toy_tasks(9, seed=5), leaf_params(family, seed=1)
    ft = finetune_dataset(family, params, tasks, 1, 4, 0.05, dataclasses.replace(base, eval_tasks=4), 0,
                          random_splits=False)
    assert ft.task.tolist() == list(range(9))
    for i in (0, 4, 8):   # first, middle and last chunk
        batch = tasks.fixed_batch(torch.tensor([i]))
        alone = adapt(family, params, family.start(params, batch).detach(), batch, 4, 0.05).detach()
        torch.testing.assert_close(ft.latent[i], alone[0])
    assert not torch.equal(ft.latent[0], params["W"].detach())   # the adaptation moved the weights
    # the adapter's φ is its weights: one storage, so the cached file is half the size of two copies
    assert ft.weights.data_ptr() == ft.latent.data_ptr()
    torch.save(ft.to_dict(), tmp_path / "once.pt")
    torch.save({**ft.to_dict(), "weights": ft.weights.clone()}, tmp_path / "twice.pt")
    assert (tmp_path / "once.pt").stat().st_size < 0.6 * (tmp_path / "twice.pt").stat().st_size


def test_conditional_training_never_reads_a_hidden_descriptor(toy_tasks):
    method = "Cond. Multitask"
    family, base = toy_setup(method)
    train_tasks = toy_tasks(40)
    described = described_tasks(40, 0.5, seed=0)
    train_tasks.text = train_tasks.text.clone()
    train_tasks.text[~described] = float("nan")           # any read of a hidden question poisons the model
    params = leaf_params(family)
    history = train(family, params, "multitask", MethodConfig(epochs=5, lr=1e-2, inner_lr=0.1), base, train_tasks,
                    described.nonzero().flatten(), seed=0)
    assert all(math.isfinite(x) for x in history["loss"])
    assert all(p.isfinite().all() for p in params.values())
    with pytest.raises(AssertionError):   # the poison is real: training on every task does break
        params = leaf_params(family)
        history = train(family, params, "multitask", MethodConfig(epochs=1, lr=1e-2, inner_lr=0.1), base,
                        train_tasks, torch.arange(40), seed=0)
        assert all(math.isfinite(x) for x in history["loss"])


def test_training_clips_every_step_it_takes(toy_tasks):
    family, base = toy_setup("Uncond. Multitask")
    base = dataclasses.replace(base, grad_clip=1e-3)
    params = leaf_params(family)
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(torch.cat([p.grad.flatten() for p in params.values()]).norm().item()))
    try:
        history = train(family, params, "multitask", MethodConfig(epochs=2, lr=1e-2, inner_lr=0.05), base,
                        toy_tasks(16), torch.arange(16), seed=0)
    finally:
        handle.remove()
    assert len(seen) == len(history["step"]) > 0
    assert max(seen) <= 1e-3 * 1.0001 < min(history["grad_norm"])


def test_a_meta_batch_in_size_sorted_parts_gives_the_whole_batchs_meta_gradient(toy_tasks):
    """base.meta_chunk_samples bounds the padded samples a part holds (real Meta-VQA pads whole tasks to up to
    1,776 samples); the parts' weighted gradients add up to the whole batch's, to float rounding, and a batch
    that fits is computed exactly as without parts."""
    from hyperclip_lib.maml import meta_chunks
    n_kept = torch.tensor([30, 5, 22, 30, 8, 17, 30, 2])
    parts = meta_chunks(n_kept, 60)
    assert sorted(torch.cat(parts).tolist()) == list(range(8))
    assert all(len(p) * int(n_kept[p].max()) <= 60 for p in parts) and len(parts) > 1
    assert [p.tolist() for p in meta_chunks(n_kept, 240)] == [list(range(8))]
    assert [p.tolist() for p in meta_chunks(n_kept, None)] == [list(range(8))]
    assert all(len(p) == 1 for p in meta_chunks(n_kept, 10) if n_kept[p].max() > 10)   # too large: a part alone

    for method, training in (("Uncond. MNet-MAML", "maml"), ("Cond. Multitask", "multitask")):
        family, base = toy_setup(method)
        base = dataclasses.replace(base, samples_per_task=None, meta_batch=8)
        runs = {}
        for budget in (None, 40):
            params = leaf_params(family)
            history = train(family, params, training, MethodConfig(epochs=2, lr=1e-2, inner_lr=0.1, inner_steps_max=3),
                            dataclasses.replace(base, meta_chunk_samples=budget), toy_tasks(16), torch.arange(16), seed=0)
            runs[budget] = (history, params)
        (whole, p_whole), (parted, p_parted) = runs[None], runs[40]
        assert whole["loss"] == pytest.approx(parted["loss"], rel=1e-5)
        assert all(torch.allclose(p_whole[k], p_parted[k], atol=1e-5) for k in p_whole)
        assert not all(torch.equal(p_whole[k], p_parted[k]) for k in p_whole)   # the parts really ran apart


@pytest.mark.parametrize("method,cfg", [
    ("Uncond. Multitask", MethodConfig(epochs=12, lr=1e-2, inner_lr=0.05)),
    ("Uncond. MNet-FOMAML", MethodConfig(epochs=6, lr=1e-2, inner_lr=0.05, inner_steps_max=2)),
])
def test_a_schedule_chosen_on_validation_tasks_ends_at_its_best_point(method, cfg, toy_tasks):
    """Early stopping on meta-validation: scored at the start and at every curve point, by the metric the rule
    gives the method; the parameters end as they were at the best point."""
    family, base = toy_setup(method)
    base = dataclasses.replace(base, curve_points=4)
    train_tasks, validation = toy_tasks(48, seed=0), toy_tasks(16, seed=2)
    select_on = selection_metric(RECIPES[method])
    assert select_on == ("zero_shot" if method == "Uncond. Multitask" else "few_shot")
    params = leaf_params(family)
    history = train(family, params, RECIPES[method].training, cfg, base, train_tasks, torch.arange(48), seed=0,
                    validation=validation, select_on=select_on)
    curve = history[f"validation_{select_on}"]
    total = len(history["step"])
    assert history["validation_step"] == [0] + [round(total * k / 4) for k in range(1, 5)]
    best = max(range(len(curve)), key=lambda i: (curve[i], -i))
    assert history["chosen_step"] == history["validation_step"][best]
    few_lr = cfg.inner_lr if select_on == "few_shot" else None
    assert evaluate(family, params, validation, base, few_shot_lr=few_lr)[select_on].mean().item() == curve[best]
    assert curve[best] > curve[0] + 10   # it learnt: the best point is not the untrained start
    # without validation tasks the same training ends at its last step, as before
    plain = leaf_params(family)
    plain_history = train(family, plain, RECIPES[method].training, cfg, base, train_tasks, torch.arange(48), seed=0)
    assert "chosen_step" not in plain_history and plain_history["loss"] == history["loss"]
