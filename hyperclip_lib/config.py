"""Plain dataclass configs and the three profiles: `ci`, `quick` (default) and `paper`.

A config is frozen; `get_config(profile, overrides)` returns a profile with dotted-key overrides
applied, e.g. ``{"world.n_images": 500, "encoder.device": "cuda"}``. Notebooks pass their
papermill parameters through the same function, the CLI its ``--set key=value`` flags.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

PROFILES = ("ci", "quick", "paper")


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_images: int = 6000
    val_fraction: float = 0.2          # share of images written as "val2014", as VQA v2 has two splits
    image_size: int = 60               # 3×3 grid of 20-px cells: one ViT patch per cell
    grid: int = 3
    min_objects: int = 4
    max_objects: int = 7
    color_concentration: float = 0.3   # Dirichlet concentration of each shape's colour habits
    cell_concentration: float = 0.3    # ... of each shape's habitual places on the grid
    size_concentration: float = 0.3    # Beta concentration of each shape's chance of being large
    max_per_question: int = 150        # cap on how often one question string is asked
    max_per_filtered_question: int = 30  # yes/no and either-or questions, which the builder drops


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
    split_seed: int = 2021        # the authors' seed for every Meta-VQA split


@dataclass(frozen=True)
class EncoderConfig:
    backend: str = "auto"         # "auto": world CLIP for the world, open_clip for real VQA
    model: str = "ViT-L-14-336"   # open_clip model name (paper: ViT-L-14-336)
    pretrained: str | None = "openai"  # a pretrained tag or a local checkpoint path
    device: str = "cpu"
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
class Config:
    profile: str = "quick"
    world: WorldConfig = field(default_factory=WorldConfig)
    world_clip: WorldClipConfig = field(default_factory=WorldClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _profile_overrides(profile: str) -> dict[str, Any]:
    if profile == "quick":
        return {}
    if profile == "ci":
        return {"world.n_images": 300, "world.max_per_question": 25,
                "world_clip.steps": 20, "world_clip.pool_images": 500, "world_clip.batch_size": 64, "world_clip.layers": 1,
                "world_clip.warmup_steps": 5, "calibration.steps": 10}
    if profile == "paper":
        return {"encoder.model": "ViT-L-14-336", "encoder.pretrained": "openai", "calibration.hidden": 256}
    raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Turn a CLI string into the type the field holds now (ints stay ints, 'none' is None)."""
    if not isinstance(value, str):
        return value
    if value.lower() in ("none", "null"):
        return None
    if current is None or isinstance(current, str):
        return value
    try:
        if isinstance(current, bool):
            return {"true": True, "false": False}[value.lower()]
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except (KeyError, ValueError):
        raise ValueError(f"config key {key!r}: cannot read {value!r} as {type(current).__name__}") from None
    return value


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Apply dotted-key overrides ("section.field") to a frozen config."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        sub = getattr(cfg, section, None) if name else None
        if not dataclasses.is_dataclass(sub):
            raise KeyError(f"unknown config section {section!r} in key {key!r}; "
                           f"expected one of world, world_clip, data, encoder, calibration")
        if name not in {f.name for f in dataclasses.fields(sub)}:
            known = ", ".join(f.name for f in dataclasses.fields(sub))
            raise KeyError(f"unknown config key {key!r}; {section} has: {known}")
        sub = dataclasses.replace(sub, **{name: _coerce(value, getattr(sub, name), key)})
        cfg = dataclasses.replace(cfg, **{section: sub})
    return cfg


def get_config(profile: str = "quick", overrides: Mapping[str, Any] | None = None, **kw: Any) -> Config:
    """The named profile with overrides applied; keyword arguments are overrides too
    (``data__vqa_root="/data/vqa"`` is ``{"data.vqa_root": "/data/vqa"}``)."""
    cfg = with_overrides(Config(profile=profile), _profile_overrides(profile))
    merged = dict(overrides or {})
    merged.update({k.replace("__", "."): v for k, v in kw.items()})
    return with_overrides(cfg, merged)


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
             "encoder.pretrained": clip_pretrained, "encoder.device": device}
    return get_config(profile, {**dict(overrides or {}), **{k: v for k, v in named.items() if v is not None}})
