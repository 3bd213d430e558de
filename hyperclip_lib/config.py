"""Plain dataclass configs and the three profiles: `ci`, `quick` (default) and `paper`.

A config is frozen; `get_config(profile, overrides)` returns a profile with dotted-key overrides
applied, e.g. ``{"world.n_images": 500, "encoder.device": "cuda"}``. Notebooks pass their
papermill parameters through the same function, the CLI its ``--set key=value`` flags.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

PROFILES = ("ci", "quick", "paper")


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_images: int = 22000            # world v2: 20,000
    val_fraction: float = 0.2          # share of images written as "val2014", as VQA v2 has two splits
    image_size: int = 80               # 4×4 grid of 20-px cells: one ViT patch per cell (world v2: 60, 3×3)
    grid: int = 4                      # cells a side: 3 or 4 (world.grid_lines names their rows and columns)
    min_objects: int = 6               # world v2: 4
    max_objects: int = 13              # world v2: 7
    shape_concentration: float = 2.0   # Dirichlet concentration of how common each kind is
    color_concentration: float = 0.6   # ... of each kind's colour habits (world v2: 0.3)
    cell_concentration: float = 0.5    # ... of each kind's habitual places on the grid
    size_concentration: float = 0.3    # Beta concentration of each kind's chance of being large
    repeat_prob: float = 0.5           # chance that an object is another of a kind already in the scene (groups
                                       # of a kind, so counts vary as VQA's; world v2: 0)
    repeat_color_prob: float = 0.8     # chance that such another one also has that one's colour (world v2: 0)
    count_salience: float = 2.0        # a "how many" question is asked of an image in proportion to its answer
                                       # to this power (world v2: 0)
    question_design: int = 4           # the question families asked (world.scene_questions): 2, 3 or 4 (world v2: 2)
    line_count_attributes: int = 1     # design 3: a count in a row or column filters on at most this many of size
                                       # and colour (0: only "objects in the top row")
    questions_per_image: int = 4       # questions asked of each image, drawn by popularity
    popularity_sigma: float = 0.7      # log-normal spread of how readily each question is asked (world v2: 0.8)
    availability_power: float = 1.0    # popularity ÷ availability^power (world.QuestionWeights)
    pilot_scenes: int = 2000           # scenes that measure each question's availability
    max_per_question: int = 600        # cap on how often one question string is asked
    max_per_filtered_question: int = 10  # yes/no and either-or questions, which the builder drops


@dataclass(frozen=True)
class WorldClipConfig:
    """The offline default encoder: a small ViT trained against the locked MiniLM text tower."""
    embed_dim: int = 256
    patch_size: int = 20
    width: int = 128
    layers: int = 4
    head_width: int = 32
    context_length: int = 64           # room for whole-scene captions (full_scene_prob); longer ones are cut
    pool_images: int = 16000           # pretraining scenes (in moved twins), disjoint from the VQA files
    full_scene_prob: float = 0.0       # share of captions that describe the whole scene
    caption_style: str = "alt-text"    # "questions" (world v2) or "alt-text" (captions.py)
    alt_color_prob: float = 0.95       # alt-text: how often a kind of one colour is named with it
    alt_number_prob: float = 0.7       # alt-text: how often a group of a kind is named with its number ("three")
    alt_max_kinds: int = 5             # alt-text: at most this many kinds named in one caption
    alt_color_count_prob: float = 0.5  # alt-text: how often a caption adds how many things share a colour
    count_twin_prob: float = 0.0       # share of pretraining pairs that are count twins, not moved twins
                                       # (captions.count_twin: one more or one fewer of a kind)
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    vqa_root: str | None = None   # a VQA v2 folder; None builds and uses the Shapes world
    meta_dir: str | None = None   # a folder holding released meta_train.json / meta_test.json
    image_features: str | None = None  # a features file (`hyperclip extract-features`): image features made
                                  # elsewhere by encoder.model / encoder.pretrained; no image is read
    split_seed: int = 2021        # the authors' seed for every Meta-VQA split
    validation_fraction: float = 0.15  # share of meta-train tasks held out as meta-validation, on which the
                                  # baselines' schedules are chosen; no method trains on them
    validation_seed: int = 0      # draws the meta-validation tasks: one split for every run seed


@dataclass(frozen=True)
class EncoderConfig:
    backend: str = "auto"         # "auto": world CLIP for the world, open_clip for real VQA
    model: str = "ViT-L-14-336"   # open_clip model name (paper: ViT-L-14-336)
    pretrained: str | None = "openai"  # a pretrained tag or a local checkpoint path
    device: str = "auto"          # "auto": CUDA when torch sees a GPU, else the CPU (resolve_device)
    batch_size: int = 128
    prompt_template: str = "a photo of {}."  # used when the data has no per-question template


@dataclass(frozen=True)
class CalibrationConfig:
    """The few-shot ceiling: an adapter fine-tuned per task on its support set."""
    steps: int = 50
    lr: float = 1e-3
    hidden: int = 64
    seed: int = 0


@dataclass(frozen=True)
class ComputeConfig:
    """How every stage computes (numerics.py): its own thread count, never the cores a batch wave leaves it, so
    records do not depend on --jobs, the executor or the machine. Notebooks run at once share the cores as
    processes. Another count is another config: its artifacts and records are kept apart."""
    threads: int = 1


@dataclass(frozen=True)
class BaseModelConfig:
    """The adapter f(x, W), the hypernetworks that make W, and how every baseline is trained/scored."""
    hidden: int = 64                  # adapter hidden width (paper: 256)
    hnet_hidden: int = 128            # hypernetwork hidden layer (paper: 256)
    hnet_latent: int = 64             # unconditional hypernetwork latent z (paper: 64)
    meta_batch: int = 32              # tasks per optimiser step (paper: 32)
    samples_per_task: int | None = 48  # random subset of a training task per step (paper: None, all of it)
    meta_chunk_samples: int | None = None  # at most this many padded samples per chunk of a meta-batch, whose
                                      # gradients add up (None: one chunk); bounds memory when whole tasks pad
                                      # to the longest (real Meta-VQA: up to 1,776 samples)
    support_fraction: float = 0.7     # share of a training draw used for adaptation, the rest is the query
    grad_clip: float = 10.0           # gradient-norm clip, applied before every optimiser step (paper: 10)
    few_shot_steps: int = 50          # adaptation steps on a meta-test support set (paper: 50)
    eval_tasks: int = 64              # meta-test tasks scored at once
    curve_points: int = 4             # checks along training: early stopping on meta-validation, the curves
    descriptor_fraction: float = 1.0  # share of training tasks whose question conditional methods may see
    seed: int = 0
    device: str = "auto"              # where meta-training runs; "auto": CUDA when there is a GPU, else the CPU


@dataclass(frozen=True)
class MethodConfig:
    """One row of the paper's Table 3: outer epochs and lr, inner (adaptation) lr and step range.
    Multitask methods do not adapt while training; their inner lr is the few-shot one (A.7)."""
    epochs: int
    lr: float
    inner_lr: float
    inner_steps_min: int = 0
    inner_steps_max: int = 0


@dataclass(frozen=True)
class GeneratorConfig:
    """Fine-tuned-weights datasets and the HVAE (Algorithm 8, A.6.1); built with the run's seed (`base.seed`),
    so the spread over seeds includes the generators' own."""
    finetune_per_task: int = 2        # adaptations per task, each on a fresh random support split
    finetune_steps: int = 50          # paper: 50 (lr: the source method's inner lr, 0.01 MNet / 0.1 HNet)
    hvae_hidden1: int = 512           # paper: encoder 512, 256; decoder mirrored
    hvae_hidden2: int = 256
    hvae_latent: int = 32             # paper: 32
    hvae_pca_components: int = 256    # VAE over the weights' top principal coordinates; 0: over every weight (paper)
    hvae_epochs: int = 15             # paper: 2000 passes over the tasks
    hvae_lr: float = 1e-3             # paper: 1e-4 (over all 33k raw weights here 1e-3 diverged)
    hvae_batch: int = 32              # paper: 32
    hvae_clip: float = 1000.0         # gradient-norm clip, encoder and decoder separately (paper: 1000)
    hvae_kl_weight: float = 0.01      # β on the KL term; 1 collapsed the posterior here (decoded = mean weights)


@dataclass(frozen=True)
class HyperClipConfig:
    """CLIP_H over flattened weights (A.6.2) and HyperCLIP guidance (Eq. 4, Algorithm 11)."""
    hidden: int = 256                 # paper: one hidden layer of 256, tanh
    epochs: int = 15                  # paper: 600
    lr: float = 3e-4                  # paper: 3e-4
    batch: int = 64                   # paper: 64 (tasks per batch, each once)
    logit_scale: float = 1 / 0.07     # initial; learnt as CLIP's temperature (clamped at 100)
    guidance_steps: int = 10          # paper: 10
    guidance_lambda: float = 0.01     # paper: 0.01
    guidance_lr: float = 0.1          # paper: 0.1
    guidance_optimizer: str = "sgd"   # "sgd": plain gradient descent, as the paper; "adam" is the variant


@dataclass(frozen=True)
class LDMConfig:
    """HyperLDM (A.6.3): schedule, network, training and sampling."""
    width1: int = 256                 # paper: 8192, 16384, 8192
    width2: int = 512
    width3: int = 256
    time_dim: int = 150               # paper: 150-d sinusoidal time embedding
    train_steps: int = 350            # diffusion steps T (paper: 350)
    beta_start: float = 1e-4          # paper: linear β from 1e-4 ...
    beta_end: float = 0.06            # ... to 0.06
    schedule: str = "linear"          # "linear" or "cosine"
    steps: int = 600                  # optimiser steps
    batch: int = 256
    lr: float = 1e-3
    cond_dropout: float = 0.2         # probability of training a described row with the null condition
    ema_decay: float = 0.995
    grad_clip: float = 10.0
    sampler: str = "sde-dpmsolver++"  # a key of models.hyperldm.SAMPLER_STEPS: "ddpm" (ancestral, all T steps),
                                      # "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc"; benchmarks/bench_sampling.py
    sampler_steps: int | None = None  # network evaluations per sample (None: the sampler's default)
    samples_per_task: int = 3         # sampled networks per meta-test task, their accuracies averaged
    gammas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)  # the guidance scales scored (Fig. 5A)
    partial_gammas: tuple[float, ...] = (1.0, 1.5)  # those scored when only part of the descriptors is known
                                      # (Table 1's 50% column, Fig. 5B): the sweep is the costly part of sampling


@dataclass(frozen=True)
class Config:
    profile: str = "quick"
    world: WorldConfig = field(default_factory=WorldConfig)
    world_clip: WorldClipConfig = field(default_factory=WorldClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    # One section per row of the paper's Table 3. These defaults are `quick`'s CPU-sized schedules (world v3's
    # budget, docs/world-v3-calibration.md), scaled evenly from Table 3: a tenth of its epochs at ten times its
    # outer lr, the MAML family a fiftieth at fifty times (each lr chosen on meta-validation over 1× and 5× of
    # the tenth's), inner lr as the paper, at most 5 inner steps; the `paper` profile sets Table 3 itself.
    clip: MethodConfig = MethodConfig(epochs=0, lr=0.0, inner_lr=0.01)   # CLIP as base model: only its few-shot lr
    multitask: MethodConfig = MethodConfig(epochs=30, lr=1e-3, inner_lr=0.01)
    mnet_maml: MethodConfig = MethodConfig(epochs=10, lr=1.5e-3, inner_lr=0.01, inner_steps_max=5)
    mnet_fomaml: MethodConfig = MethodConfig(epochs=10, lr=1.5e-3, inner_lr=0.01, inner_steps_max=5)
    hnet_maml: MethodConfig = MethodConfig(epochs=2, lr=1.5e-3, inner_lr=0.1, inner_steps_max=5)
    cond_multitask: MethodConfig = MethodConfig(epochs=6, lr=1e-3, inner_lr=0.1)
    film: MethodConfig = MethodConfig(epochs=30, lr=1e-3, inner_lr=0.1)
    cond_hnet_maml: MethodConfig = MethodConfig(epochs=4, lr=5e-4, inner_lr=0.1, inner_steps_max=5)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    hyperclip: HyperClipConfig = field(default_factory=HyperClipConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


METHOD_SECTIONS = ("multitask", "mnet_maml", "mnet_fomaml", "hnet_maml", "cond_multitask", "film", "cond_hnet_maml")
MAML_SECTIONS = ("mnet_maml", "mnet_fomaml", "hnet_maml", "cond_hnet_maml")
# Table 3 of the paper (epochs, outer lr, inner lr, inner steps 0-10 sampled per adaptation).
PAPER_TABLE3 = {
    "multitask": {"epochs": 300, "lr": 1e-4},
    "mnet_maml": {"epochs": 500, "lr": 3e-5, "inner_lr": 0.01, "inner_steps_max": 10},
    "mnet_fomaml": {"epochs": 500, "lr": 3e-5, "inner_lr": 0.01, "inner_steps_max": 10},
    "hnet_maml": {"epochs": 100, "lr": 3e-5, "inner_lr": 0.1, "inner_steps_max": 10},
    "cond_multitask": {"epochs": 60, "lr": 1e-4},
    "film": {"epochs": 300, "lr": 1e-4},
    "cond_hnet_maml": {"epochs": 200, "lr": 1e-5, "inner_lr": 0.1, "inner_steps_max": 10},
}


# World v2 (docs/world-v2-calibration.md): a 3×3 grid of at most 7 things, v2's question families, captions
# written from the questions. The `ci` profile names it, so that its scenes, its shipped world CLIP and its records
# stay as they are when the default world changes (world v3, issue 23); `--set`s of these give world v2 anywhere.
WORLD_V2 = {"world.n_images": 20000, "world.image_size": 60, "world.grid": 3, "world.min_objects": 4,
            "world.max_objects": 7, "world.color_concentration": 0.3, "world.repeat_prob": 0.0,
            "world.repeat_color_prob": 0.0, "world.count_salience": 0.0, "world.question_design": 2,
            "world.popularity_sigma": 0.8, "world_clip.caption_style": "questions", "world_clip.alt_color_prob": 0.7,
            "world_clip.alt_number_prob": 0.3, "world_clip.alt_max_kinds": 3, "world_clip.alt_color_count_prob": 0.0,
            "world_clip.count_twin_prob": 0.0}


CI_SCHEDULES_BEFORE_V3 = {"data.validation_fraction": 0.0, "mnet_maml.lr": 3e-4, "mnet_fomaml.lr": 3e-4,
                          "hnet_maml.lr": 3e-4, "cond_hnet_maml.lr": 1e-4}


def _profile_overrides(profile: str) -> dict[str, Any]:
    if profile == "quick":
        return {}
    if profile == "ci":
        # world v2's scenes and captions, and the schedules its records were written for before world v3
        return {**WORLD_V2, **CI_SCHEDULES_BEFORE_V3,
                "world.n_images": 300, "world.max_per_question": 25, "world.questions_per_image": 1000,
                "world.availability_power": 0.0,
                "world_clip.steps": 20, "world_clip.pool_images": 500, "world_clip.batch_size": 64, "world_clip.layers": 1,
                "world_clip.warmup_steps": 5, "calibration.steps": 10,
                "base.hidden": 16, "base.hnet_hidden": 16, "base.hnet_latent": 8, "base.meta_batch": 8,
                "base.samples_per_task": 16, "base.few_shot_steps": 5, "base.curve_points": 2,
                **{f"{m}.epochs": 1 for m in METHOD_SECTIONS}, **{f"{m}.inner_steps_max": 2 for m in MAML_SECTIONS},
                "generator.finetune_per_task": 2, "generator.finetune_steps": 5, "generator.hvae_hidden1": 32,
                "generator.hvae_hidden2": 16, "generator.hvae_latent": 4, "generator.hvae_epochs": 2,
                "hyperclip.hidden": 16, "hyperclip.epochs": 2, "hyperclip.guidance_steps": 3,
                # 300 LDM steps (under a second): at 20 the condition had not yet reached the network, and γ
                # changed no sample, which left the γ slider's browser check nothing to prove
                "ldm.width1": 32, "ldm.width2": 64, "ldm.width3": 32, "ldm.steps": 300, "ldm.batch": 64,
                "ldm.train_steps": 50, "ldm.samples_per_task": 1, "ldm.gammas": "0,1,1.5", "ldm.partial_gammas": "1.5"}
    if profile == "paper":
        return {"encoder.model": "ViT-L-14-336", "encoder.pretrained": "openai", "calibration.hidden": 256,
                "base.hidden": 256, "base.hnet_hidden": 256, "base.samples_per_task": None,
                "base.meta_chunk_samples": 16384,
                "generator.finetune_per_task": 20, "generator.hvae_epochs": 2000, "generator.hvae_pca_components": 0,
                "generator.hvae_lr": 1e-4, "generator.hvae_kl_weight": 1.0,   # A.6.1's HVAE, as the paper
                "hyperclip.epochs": 600, "ldm.width1": 8192, "ldm.width2": 16384, "ldm.width3": 8192,
                "ldm.lr": 2.5e-4, "ldm.batch": 128, "ldm.steps": 136_000,   # A.6.3: 1000 epochs of ~17k latents
                "ldm.sampler": "ddpm",   # the paper's sampler, all 350 steps (cheap on a GPU)
                "data.validation_fraction": 0.0, "base.curve_points": 10,   # Table 3's schedules, not chosen ones
                **{f"{m}.{k}": v for m, row in PAPER_TABLE3.items() for k, v in row.items()}}
    raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")


def parse_numbers(text: str, kind: type = float, name: str = "value") -> list:
    """'0,1,1.5' -> [0.0, 1.0, 1.5]; a clear error naming `name` otherwise."""
    try:
        return [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} expects comma-separated numbers, e.g. 0,1,2; got {text!r}") from None


def _field_kind(section: Any, name: str) -> type:
    """The type a config field holds: its value's, or, while it is None, the declared one (`int | None` -> int)."""
    value = getattr(section, name)
    if value is not None:
        return type(value)
    declared = [a for a in typing.get_args(typing.get_type_hints(type(section))[name]) if a is not type(None)]
    return (typing.get_origin(declared[0]) or declared[0]) if declared else str


def _coerce(value: Any, kind: type, key: str) -> Any:
    """Turn a CLI string into the field's type (ints stay ints, 'none' is None, a tuple of floats from
    '0,1,1.5' or a list)."""
    if issubclass(kind, tuple):
        return tuple(float(v) for v in (parse_numbers(value, float, key) if isinstance(value, str) else value))
    if not isinstance(value, str):
        return value
    if value.lower() in ("none", "null"):
        return None
    try:
        if kind is bool:
            return {"true": True, "false": False}[value.lower()]
        if kind in (int, float):
            return kind(value)
    except (KeyError, ValueError):
        raise ValueError(f"config key {key!r}: cannot read {value!r} as {kind.__name__}") from None
    return value


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Apply dotted-key overrides ("section.field") to a frozen config."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        sub = getattr(cfg, section, None) if name else None
        if not dataclasses.is_dataclass(sub):
            sections = ", ".join(f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name)))
            raise KeyError(f"unknown config section {section!r} in key {key!r}; expected one of {sections}")
        if name not in {f.name for f in dataclasses.fields(sub)}:
            known = ", ".join(f.name for f in dataclasses.fields(sub))
            raise KeyError(f"unknown config key {key!r}; {section} has: {known}")
        sub = dataclasses.replace(sub, **{name: _coerce(value, _field_kind(sub, name), key)})
        cfg = dataclasses.replace(cfg, **{section: sub})
    return cfg


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; any other name as given."""
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_config(profile: str = "quick", overrides: Mapping[str, Any] | None = None, **kw: Any) -> Config:
    """The named profile with overrides applied; keyword arguments are overrides too
    (``data__vqa_root="/data/vqa"`` is ``{"data.vqa_root": "/data/vqa"}``). Devices left at "auto" are resolved
    here, so a config (and its hash, keys and records) names the device that computes it."""
    cfg = with_overrides(Config(profile=profile), _profile_overrides(profile))
    merged = dict(overrides or {})
    merged.update({k.replace("__", "."): v for k, v in kw.items()})
    cfg = with_overrides(cfg, merged)
    return with_overrides(cfg, {"encoder.device": resolve_device(cfg.encoder.device),
                                "base.device": resolve_device(cfg.base.device)})


def default_seeds(profile: str) -> list[int]:
    """The seeds a notebook or batch runs when none are given: one in `ci`, three otherwise."""
    return [0] if profile == "ci" else [0, 1, 2]


def run_configs(cfg: Config, seeds, descriptor_fractions):
    """One config per (seed, descriptor share) of a sweep, in that order."""
    for seed in seeds:
        for fraction in descriptor_fractions:
            yield with_overrides(cfg, {"base.seed": seed, "base.descriptor_fraction": fraction})


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """['world.n_images=500', ...] from the command line -> {'world.n_images': '500', ...}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def notebook_config(profile: str, overrides: Mapping[str, Any] | None = None, *, vqa_root: str | None = None,
                    meta_dir: str | None = None, clip_model: str | None = None, clip_pretrained: str | None = None,
                    device: str | None = None) -> Config:
    """A notebook's papermill parameters -> Config; the named parameters win over `overrides`."""
    named = {"data.vqa_root": vqa_root, "data.meta_dir": meta_dir, "encoder.model": clip_model,
             "encoder.pretrained": clip_pretrained, "encoder.device": device, "base.device": device}
    return get_config(profile, {**dict(overrides or {}), **{k: v for k, v in named.items() if v is not None}})
