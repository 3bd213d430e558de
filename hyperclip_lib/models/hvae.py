"""HVAE: a VAE over fine-tuned adapter weights (paper A.6.1, Algorithm 8).

Encoder → 512 → 256 → (μ, log σ²) of a 32-d latent, decoder mirrored, Kaiming init. Its input and
output are the weights in fixed coordinates (`coordinates`): their top principal directions
(`generator.hvae_pca_components`; 0: every weight, per-dimension standardised).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..config import GeneratorConfig
from ..taskdata import row_chunks
from .families import kaiming


class Standardizer(nn.Module):
    """Per-dimension standardisation with statistics from a training set (buffers: saved with the model)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @staticmethod
    def fit(x: torch.Tensor, eps: float = 1e-6) -> "Standardizer":
        return Standardizer(x.mean(0), x.std(0).clamp(min=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    @property
    def n_coordinates(self) -> int:
        return self.mean.shape[0]


class PCACoordinates(nn.Module):
    """W ↦ its coordinates on the top-k principal directions of a training set, divided by one common
    scale (so high-variance directions keep their weight in a squared error); `inverse` maps back."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("basis", basis)
        self.register_buffer("scale", scale)

    @staticmethod
    def fit(x: torch.Tensor, k: int, seed: int = 0) -> "PCACoordinates":
        k = min(k, *x.shape)
        with torch.random.fork_rng(devices=[]):   # randomised SVD, repeatable
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(x, q=k, center=True, niter=6)
        scale = (s.pow(2).mean() / max(1, len(x) - 1)).sqrt()
        return PCACoordinates(x.mean(0), v.T.contiguous(), scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.basis.T / self.scale

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        return self.mean + (c * self.scale) @ self.basis

    @property
    def n_coordinates(self) -> int:
        return self.basis.shape[0]


def fit_coordinates(weights: torch.Tensor, pca_components: int, seed: int) -> Standardizer | PCACoordinates:
    return PCACoordinates.fit(weights, pca_components, seed) if pca_components else Standardizer.fit(weights)


def coordinates_from_state(state: dict, prefix: str = "") -> Standardizer | PCACoordinates:
    """The coordinates saved in a state dict (under `prefix`), rebuilt with their saved shapes."""
    if f"{prefix}basis" in state:
        return PCACoordinates(*(state[f"{prefix}{k}"] for k in ("mean", "basis", "scale")))
    return Standardizer(state[f"{prefix}mean"], state[f"{prefix}std"])


class Linear(nn.Linear):
    """nn.Linear computed as x @ Wᵀ + b (the form the cached results were produced with; F.linear's fused
    addmm rounds differently) and initialised He-normal from a given generator (bias zero)."""

    def __init__(self, fan_in: int, fan_out: int, generator: torch.Generator | None = None, gain: float = 1.0):
        super().__init__(fan_in, fan_out)
        if generator is not None:   # None: left for load_state_dict to fill
            with torch.no_grad():
                self.weight.copy_(kaiming(fan_out, fan_in, generator) * gain)
                self.bias.zero_()

    def reset_parameters(self) -> None:
        """No draw from the global RNG: initialisation comes from the generator passed in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


def mlp(sizes: list[int], generator: torch.Generator | None, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of `sizes` with `activation` between them (none after the last), He-normal init."""
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(fan_in, fan_out, generator))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per row, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


class HVAE(nn.Module):
    """A VAE over adapter weights in fixed `coordinates`; `decode` returns adapter weights W."""

    def __init__(self, coordinates: Standardizer | PCACoordinates, hidden: tuple[int, int], latent: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        h1, h2 = hidden
        n = coordinates.n_coordinates
        self.coordinates = coordinates
        self.latent_dim = latent
        self.encoder = mlp([n, h1, h2, 2 * latent], generator)
        self.decoder = mlp([latent, h2, h1, n], generator)

    def encode(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(self.coordinates(W)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)   # keeps exp(logvar) finite early in training

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.coordinates.inverse(self.decoder(z))

    def latent_means(self, W: torch.Tensor) -> torch.Tensor:
        """The encoder's mean latent of every row of W [M, P], without gradient, in row chunks (the `paper`
        HVAE reads every weight: standardising all of a fine-tuned set at once would copy it)."""
        with torch.no_grad():
            return torch.cat([self.encode(W[rows.to(W.device)])[0] for rows in row_chunks(len(W), W.shape[1])])

    def elbo_terms(self, W: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-row negative log-likelihood (unit-variance Gaussian on the coordinates, up to a constant) and
        KL to the prior; the negative ELBO is their sum."""
        mu, logvar = self.encode(W)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device) if generator is not None else torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        nll = 0.5 * (self.decoder(z) - self.coordinates(W)).pow(2).sum(-1)
        return {"nll": nll, "kl": gaussian_kl(mu, logvar)}

    @staticmethod
    def from_state_dict(state: dict, g: GeneratorConfig) -> "HVAE":
        vae = HVAE(coordinates_from_state(state, "coordinates."), (g.hvae_hidden1, g.hvae_hidden2), g.hvae_latent)
        vae.load_state_dict(state)
        return vae.eval()


def train_hvae(vae: HVAE, weights: torch.Tensor, task: torch.Tensor, g: GeneratorConfig, seed: int) -> dict:
    """Adam on the negative ELBO (β = `g.hvae_kl_weight` on the KL); each epoch is one pass over the tasks,
    one random sample of each (Algorithm 8); encoder and decoder gradients are clipped separately, before
    the step."""
    rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(list(vae.encoder.parameters()) + list(vae.decoder.parameters()), lr=g.hvae_lr)
    by_task = [torch.nonzero(task == t).flatten() for t in task.unique()]
    history = {"step": [], "loss": [], "nll": [], "kl": []}
    with tqdm(total=g.hvae_epochs, desc="HVAE", leave=False) as bar:
        for _ in range(g.hvae_epochs):
            pick = torch.stack([rows[torch.randint(len(rows), (1,), generator=rng)] for rows in by_task]).flatten()
            for idx in pick[torch.randperm(len(pick), generator=rng)].split(g.hvae_batch):
                terms = vae.elbo_terms(weights[idx], rng)
                loss = (terms["nll"] + g.hvae_kl_weight * terms["kl"]).mean()
                optimizer.zero_grad()
                loss.backward()
                for part in (vae.encoder, vae.decoder):
                    torch.nn.utils.clip_grad_norm_(list(part.parameters()), g.hvae_clip)
                optimizer.step()
                history["step"].append(len(history["step"]) + 1)
                history["loss"].append(loss.item())
                history["nll"].append(terms["nll"].mean().item())
                history["kl"].append(terms["kl"].mean().item())
            bar.update()
            bar.set_postfix(nll=f"{history['nll'][-1]:.1f}", kl=f"{history['kl'][-1]:.1f}")
    return history
