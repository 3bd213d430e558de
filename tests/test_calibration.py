"""The base adapter and the calibration references on a learnable toy task."""
import torch

from hyperclip_lib.models.adapter import AdapterSpec, adapter_logits, clip_logits
from hyperclip_lib.calibration import METHODS, calibrate, finetune_adapters, summarize, task_data
from hyperclip_lib.config import CalibrationConfig
from hyperclip_lib.features import FeatureStore
from hyperclip_lib.metavqa import Task
from hyperclip_lib.models.families import AdapterFamily
from hyperclip_lib.taskdata import TaskTensors


def test_flat_weights_round_trip_and_zero_residual_start_is_plain_clip():
    spec = AdapterSpec(dim=8, hidden=3)
    assert spec.n_params == 3 * 8 + 3 + 8 * 3 + 8
    W = torch.arange(spec.n_params, dtype=torch.float32)
    p = spec.unflatten(W)
    assert p["W1"].shape == (3, 8) and p["b2"].shape == (8,) and p["b1"][0] == 24
    x, emb = torch.randn(5, 8), torch.randn(4, 8)
    W0 = spec.init(torch.Generator().manual_seed(0))
    assert torch.allclose(adapter_logits(x, W0, spec, emb), clip_logits(x, emb), atol=1e-5)
    # batched weights [T, P] act per task
    Wb = torch.stack([W0, torch.randn(spec.n_params)])
    out = adapter_logits(x.expand(2, 5, 8), Wb, spec, emb.expand(2, 4, 8))
    assert torch.allclose(out[0], clip_logits(x, emb), atol=1e-5)
    assert torch.allclose(out[1], adapter_logits(x, Wb[1], spec, emb), atol=1e-5)


def toy_features(n_tasks=6, dim=16, per_answer=12, seed=0):
    """Images whose class is written in a direction unrelated to its prompt: CLIP fails, fine-tuning learns it."""
    g = torch.Generator().manual_seed(seed)
    names, feats, tasks, answers, prompts, embs = [], [], [], {}, {}, {}
    for t in range(n_tasks):
        q = f"task {t}?"
        ans = ["a", "b", "c"]
        emb = torch.nn.functional.normalize(torch.randn(3, dim, generator=g), dim=-1)
        keys = torch.nn.functional.normalize(torch.randn(3, dim, generator=g), dim=-1)
        samples = []
        for k in range(3):
            for j in range(per_answer):
                names.append(f"img{t}_{k}_{j}")
                feats.append(torch.nn.functional.normalize(keys[k] + 0.3 * torch.randn(dim, generator=g), dim=0))
                samples.append((names[-1], ans[k]))
        support = tuple(s for i, s in enumerate(samples) if i % 3)
        query = tuple(s for i, s in enumerate(samples) if not i % 3)
        tasks.append(Task(q, tuple(ans), support, query))
        answers[q], prompts[q], embs[q] = ans, ans, emb
    fs = FeatureStore({"name": "toy", "config_hash": "0", "dim": dim}, names, torch.stack(feats),
                      [t.question for t in tasks], torch.zeros(n_tasks, dim), answers, prompts, embs)
    return fs, tuple(tasks)


def test_fine_tuned_adapter_learns_a_toy_task_that_zero_shot_cannot():
    fs, tasks = toy_features()
    rows = calibrate(fs, tasks, CalibrationConfig(steps=50, lr=1e-2, hidden=16))
    s = summarize(rows)
    assert abs(s["chance"]["task_mean"] - 100 / 3) < 1e-9
    assert s["adapter fine-tuned on support (few-shot ceiling)"]["task_mean"] > 90
    assert s["CLIP as base model (zero-shot floor)"]["task_mean"] < 70
    assert set(s) == set(METHODS)


def reference_finetune(x, y, emb, spec, cfg):
    """The ceiling's fine-tuning written for one task alone: Adam on its flat weights, full-batch support loss."""
    W = spec.init(torch.Generator().manual_seed(cfg.seed)).requires_grad_(True)
    opt = torch.optim.Adam([W], lr=cfg.lr)
    for _ in range(cfg.steps):
        loss = torch.nn.functional.cross_entropy(adapter_logits(x, W, spec, emb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach()


def test_batched_finetuning_gives_each_task_its_own_adapter_and_lowers_its_loss():
    fs, tasks = toy_features(n_tasks=4)
    # ragged tasks, so the batch pads samples: 24/12, 10/5, 18/9, 6/3 support/query samples
    tasks = tuple(Task(t.question, t.answers, t.support[:n], t.query[:n // 2])
                  for t, n in zip(tasks, (24, 10, 18, 6)))
    cfg = CalibrationConfig(steps=20, lr=1e-2, hidden=8)
    family = AdapterFamily(AdapterSpec(16, 8))
    batch = TaskTensors.from_tasks(fs, tasks).fixed_batch(torch.arange(len(tasks)))
    W = finetune_adapters(family, batch, cfg)
    for i, task in enumerate(tasks):
        x, y = task_data(fs, task, "support")
        emb = fs.answer_embeddings[task.question]
        alone = reference_finetune(x, y, emb, family.spec, cfg)
        assert torch.allclose(W[i], alone, atol=1e-5), i
        start = family.spec.init(torch.Generator().manual_seed(cfg.seed))
        loss = [torch.nn.functional.cross_entropy(adapter_logits(x, w, family.spec, emb), y) for w in (start, W[i])]
        assert loss[1] < 0.5 * loss[0]
