"""Unconditional generative hypernetworks h(z) → W and the fine-tuned-weights datasets behind them.

* **HNet**: the hypernetwork and meta-learned z⁰ of Uncond. HNet-MAML (paper §2.3, A.6.1).
* **HVAE**: a VAE over fine-tuned adapter weights (Algorithm 8): encoder → 512 → 256 → (μ, log σ²) of a
  32-d latent, decoder mirrored, Kaiming init. Its input and output are the weights' coordinates on their
  top principal directions (`generator.hvae_pca_components`; 0: every weight, standardised).
* **Fine-tuned datasets**: many (task, adapted z or W, question embedding) samples, each from an
  adaptation on a random support split of a task — 50 steps from the HNet's z⁰ (lr 0.1, adapting z) or
  from the MNet-MAML initialisation (lr 0.01, adapting W). HyperCLIP and HyperLDM reuse them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import BaseModelConfig
from .meta import adapt
from .methods import AdapterFamily, Family, kaiming, task_accuracies
from .taskdata import TaskTensors


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
    """`per_task` adaptations of every task, batched over tasks. With `random_splits`, each adapts on a
    fresh random 70% of the task's data (as training tasks, A.6); otherwise on the fixed support set."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(len(tasks)).repeat(per_task)
    task, latent, weights = [], [], []
    for idx in tqdm(rows.split(base.eval_tasks), desc=desc, leave=False):
        batch = (tasks.sample_batch(idx, None, base.support_fraction, generator) if random_splits
                 else tasks.fixed_batch(idx))
        with torch.no_grad():
            phi0 = family.start(params, batch)
        phi = adapt(family, params, phi0.detach(), batch, steps, lr).detach()
        with torch.no_grad():
            latent.append(phi)
            weights.append(family.weights(params, phi))
        task.append(idx)
    return FineTuned(torch.cat(task), torch.cat(latent), torch.cat(weights))


def weights_accuracy(adapter: AdapterFamily, weights: torch.Tensor, tasks: TaskTensors, task: torch.Tensor,
                     chunk: int = 256) -> torch.Tensor:
    """Query accuracy (%) of adapter weights `weights[m]` on task `task[m]`'s fixed query set (the
    adapter family's φ is the weights themselves, so it needs no meta-parameters)."""
    out = []
    for rows in torch.arange(len(task)).split(chunk):
        batch = tasks.fixed_batch(task[rows])
        with torch.no_grad():
            logits = adapter.logits({}, weights[rows], batch.x, batch)
            out.append(task_accuracies(logits, batch.labels, batch.query))
    return torch.cat(out)


class Standardizer:
    """Per-dimension standardisation with statistics from a training set (kept with the model)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean, std

    @staticmethod
    def fit(x: torch.Tensor, eps: float = 1e-6) -> "Standardizer":
        return Standardizer(x.mean(0), x.std(0).clamp(min=eps))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std}


def coordinates_from_state(state: dict):
    return PCACoordinates(**state) if "basis" in state else Standardizer(**state)


class PCACoordinates:
    """W ↦ its coordinates on the top-k principal directions of a training set, divided by one common
    scale (so high-variance directions keep their weight in a squared error); `inverse` maps back."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor):
        self.mean, self.basis, self.scale = mean, basis, scale

    @staticmethod
    def fit(x: torch.Tensor, k: int, seed: int = 0) -> "PCACoordinates":
        k = min(k, *x.shape)
        with torch.random.fork_rng(devices=[]):   # randomised SVD, repeatable
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(x, q=k, center=True, niter=6)
        scale = (s.pow(2).mean() / max(1, len(x) - 1)).sqrt()
        return PCACoordinates(x.mean(0), v.T.contiguous(), scale)

    def state(self) -> dict:
        return {"mean": self.mean, "basis": self.basis, "scale": self.scale}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.basis.T / self.scale

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        return self.mean + (c * self.scale) @ self.basis


def mlp_params(prefix: str, sizes: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        out[f"{prefix}.{i}.W"] = kaiming(fan_out, fan_in, generator)
        out[f"{prefix}.{i}.b"] = torch.zeros(fan_out)
    return out


def mlp(params: dict, prefix: str, x: torch.Tensor, activation=F.relu) -> torch.Tensor:
    """Linear layers `prefix.i` with `activation` between them (none after the last)."""
    n = sum(1 for k in params if k.startswith(prefix + ".") and k.endswith(".W"))
    for i in range(n):
        x = x @ params[f"{prefix}.{i}.W"].T + params[f"{prefix}.{i}.b"]
        if i < n - 1:
            x = activation(x)
    return x


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per row, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


@dataclass
class HVAE:
    """A VAE over adapter weights in fixed coordinates (`scale`: per-dimension standardised weights, or
    their top principal components); `decode` returns adapter weights W."""
    params: dict
    scale: Standardizer | PCACoordinates
    latent_dim: int

    @staticmethod
    def create(n_inputs: int, hidden: tuple[int, int], latent: int, scale, generator: torch.Generator) -> "HVAE":
        h1, h2 = hidden
        params = {**mlp_params("enc", [n_inputs, h1, h2, 2 * latent], generator),
                  **mlp_params("dec", [latent, h2, h1, n_inputs], generator)}
        return HVAE(params, scale, latent)

    def encode(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = mlp(self.params, "enc", self.scale(W)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)   # keeps exp(logvar) finite early in training

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale.inverse(mlp(self.params, "dec", z))

    def elbo_terms(self, W: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-row negative log-likelihood (unit-variance Gaussian on standardised weights, up to a
        constant) and KL to the prior; the negative ELBO is their sum."""
        mu, logvar = self.encode(W)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device) if generator is not None else torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        recon = mlp(self.params, "dec", z)
        nll = 0.5 * (recon - self.scale(W)).pow(2).sum(-1)
        return {"nll": nll, "kl": gaussian_kl(mu, logvar)}


def train_hvae(vae: HVAE, weights: torch.Tensor, task: torch.Tensor, epochs: int, lr: float, batch_size: int,
               clip: float, kl_weight: float, seed: int) -> dict:
    """Adam on the negative ELBO; each epoch is one pass over the tasks, one random sample of each
    (Algorithm 8); encoder and decoder gradients are clipped separately, before the step."""
    generator = torch.Generator().manual_seed(seed)
    leaves = list(vae.params.values())
    optimizer = torch.optim.Adam(leaves, lr=lr)
    groups = [[v for k, v in vae.params.items() if k.startswith(p)] for p in ("enc.", "dec.")]
    by_task = [torch.nonzero(task == t).flatten() for t in task.unique()]
    history = {"step": [], "loss": [], "nll": [], "kl": []}
    with tqdm(total=epochs, desc="HVAE", leave=False) as bar:
        for _ in range(epochs):
            pick = torch.stack([rows[torch.randint(len(rows), (1,), generator=generator)] for rows in by_task]).flatten()
            for idx in pick[torch.randperm(len(pick), generator=generator)].split(batch_size):
                terms = vae.elbo_terms(weights[idx], generator)
                loss = (terms["nll"] + kl_weight * terms["kl"]).mean()
                optimizer.zero_grad()
                loss.backward()
                for group in groups:
                    torch.nn.utils.clip_grad_norm_(group, clip)
                optimizer.step()
                history["step"].append(len(history["step"]) + 1)
                history["loss"].append(loss.item())
                history["nll"].append(terms["nll"].mean().item())
                history["kl"].append(terms["kl"].mean().item())
            bar.update()
            bar.set_postfix(nll=f"{history['nll'][-1]:.1f}", kl=f"{history['kl'][-1]:.1f}")
    return history


@dataclass
class LatentGenerator:
    """An unconditional generator h(z) → W with a starting point for guidance: z⁰ for the HNet,
    z ~ N(0, I) for the HVAE (Algorithm 11)."""
    name: str
    latent_dim: int
    decode: callable
    z0: torch.Tensor | None = None

    def start(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.z0 is not None:
            return self.z0.detach().expand(n, -1).clone()
        return torch.randn(n, self.latent_dim, generator=generator)


def hnet_generator(family: Family, params: dict) -> LatentGenerator:
    return LatentGenerator("HNet", params["z0"].shape[-1], lambda z: family.weights(params, z), params["z0"])


def hvae_generator(vae: HVAE) -> LatentGenerator:
    return LatentGenerator("HVAE", vae.latent_dim, vae.decode)


# --- cached stages -------------------------------------------------------------------------------

SOURCES = {"HNet": "Uncond. HNet-MAML", "MNet": "Uncond. MNet-MAML"}


def _source(cfg, source: str):
    if source not in SOURCES:
        raise KeyError(f"unknown fine-tuning source {source!r}; expected one of {', '.join(SOURCES)}")
    from .baselines import recipe_and_config
    return SOURCES[source], recipe_and_config(cfg, SOURCES[source])[1].inner_lr


def generator_cfg(cfg):
    """The config the generators are built with: pretrained once, with `generator.seed` (not the run's
    seed) and on every task, so runs that vary the seed or the descriptor share reuse them."""
    from .config import with_overrides
    return with_overrides(cfg, {"base.seed": cfg.generator.seed, "base.descriptor_fraction": 1.0})


def finetuned_key(cfg, source: str, data) -> dict:
    from .baselines import baseline_key
    cfg = generator_cfg(cfg)
    method, lr = _source(cfg, source)
    g = cfg.generator
    return {"source": baseline_key(cfg, method, data), "per_task": g.finetune_per_task,
            "steps": g.finetune_steps, "lr": lr, "seed": g.seed}


def ensure_finetuned(cfg, source: str, data, features, store=None) -> dict[str, FineTuned]:
    """{'train': per_task adaptations of every meta-train task on random splits, 'test': one adaptation
    of every meta-test task on its support set} from the HNet's z⁰ or the MNet-MAML initialisation."""
    from .baselines import run_baseline
    from .store import ArtifactStore
    store = store or ArtifactStore()
    cfg = generator_cfg(cfg)
    method, lr = _source(cfg, source)
    base = run_baseline(cfg, method, data, features, store)

    def build(folder):
        out = {}
        for split, tasks, per_task, random_splits in (("train", data.split.train, cfg.generator.finetune_per_task, True),
                                                      ("test", data.split.test, 1, False)):
            tensors = TaskTensors.from_tasks(features, tasks).to(cfg.base.device)
            ft = finetune_dataset(base.family, base.params, tensors, per_task, cfg.generator.finetune_steps, lr,
                                  cfg.base, cfg.base.seed, random_splits, desc=f"fine-tune {source} ({split})")
            out[split] = {k: v.cpu() for k, v in ft.to_dict().items()}
        torch.save(out, folder / "finetuned.pt")

    folder = store.ensure("finetuned", finetuned_key(cfg, source, data), build)
    loaded = torch.load(folder / "finetuned.pt", map_location=cfg.base.device, weights_only=True)
    return {split: FineTuned(**d) for split, d in loaded.items()}


def ensure_hvae(cfg, data, features, store=None) -> tuple[HVAE, dict, dict]:
    """The HVAE trained on MNet fine-tuned weights: (model, training history, reconstruction record)."""
    import json
    from .baselines import build_family
    from .store import ArtifactStore, atomic_write_json
    store = store or ArtifactStore()
    cfg = generator_cfg(cfg)
    g = cfg.generator
    finetuned = ensure_finetuned(cfg, "MNet", data, features, store)
    family = build_family(cfg, SOURCES["MNet"], features)
    key = {"finetuned": finetuned_key(cfg, "MNet", data),
           "hvae": {k: v for k, v in vars(g).items() if k.startswith("hvae") or k == "seed"}}

    def build(folder):
        train_set = finetuned["train"]
        scale = (PCACoordinates.fit(train_set.weights, g.hvae_pca_components, g.seed) if g.hvae_pca_components
                 else Standardizer.fit(train_set.weights))
        n_inputs = scale.basis.shape[0] if g.hvae_pca_components else train_set.weights.shape[1]
        vae = HVAE.create(n_inputs, (g.hvae_hidden1, g.hvae_hidden2), g.hvae_latent, scale,
                          torch.Generator().manual_seed(g.seed))
        vae.params = {k: v.to(cfg.base.device).requires_grad_(True) for k, v in vae.params.items()}
        history = train_hvae(vae, train_set.weights, train_set.task, g.hvae_epochs, g.hvae_lr, g.hvae_batch,
                             g.hvae_clip, g.hvae_kl_weight, g.seed)
        record = {}
        for split, tasks in (("train", data.split.train), ("test", data.split.test)):
            ft = finetuned[split]
            tensors = TaskTensors.from_tasks(features, tasks).to(cfg.base.device)
            with torch.no_grad():
                decoded = vae.decode(vae.encode(ft.weights)[0])
            record[split] = {"fine-tuned weights": weights_accuracy(family, ft.weights, tensors, ft.task).mean().item(),
                             "decoded (encoder mean)": weights_accuracy(family, decoded, tensors, ft.task).mean().item()}
        torch.save({"params": {k: v.detach().cpu() for k, v in vae.params.items()},
                    "coordinates": {k: v.cpu() for k, v in scale.state().items()}}, folder / "hvae.pt")
        atomic_write_json(folder / "history.json", history)
        atomic_write_json(folder / "record.json", record, indent=1)

    folder = store.ensure("hvae", key, build)
    state = torch.load(folder / "hvae.pt", map_location=cfg.base.device, weights_only=True)
    vae = HVAE(state["params"], coordinates_from_state(state["coordinates"]), g.hvae_latent)
    return vae, json.loads((folder / "history.json").read_text()), json.loads((folder / "record.json").read_text())
