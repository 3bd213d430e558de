"""Notebook 01's stages: the benchmark and its features.

    world ──► Meta-VQA tasks ──► encoder ──► FeatureStore

Every `ensure_*` returns what a notebook needs, building it only when its cached artifact is
absent or broken, so any notebook can run alone and re-running is cheap.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import encoders
from ..config import Config
from ..features import FeatureFile, FeatureFileError, FeatureStore
from ..metavqa import (MetaVQAError, SPLITS, Task, TaskSplit, annotation_file, build_meta_vqa, find_image,
                       load_meta_vqa, prompt_file, question_file, read_json, write_meta_vqa)
from ..store import MANIFEST, ArtifactError, ArtifactStore, config_hash, file_sha256
from ..world import generate_world, scene_config
from .common import stage_key


@dataclass
class Data:
    """A built benchmark: where its VQA files live, its tasks, and its answer-prompt templates. `validation`
    indexes the meta-train tasks held out as meta-validation: methods train on `train_tasks`, the rest."""
    vqa_root: Path
    split: TaskSplit
    templates: dict[str, str]
    source: dict
    validation: tuple[int, ...] = ()

    @property
    def train_tasks(self) -> tuple[Task, ...]:
        held_out = set(self.validation)
        return tuple(t for i, t in enumerate(self.split.train) if i not in held_out)

    @property
    def validation_tasks(self) -> tuple[Task, ...]:
        return tuple(self.split.train[i] for i in self.validation)


def validation_tasks(n_train: int, fraction: float, seed: int) -> tuple[int, ...]:
    """Indices of the meta-train tasks held out as meta-validation: a `fraction` of them drawn by `seed`."""
    if not 0 <= fraction < 1:
        raise ValueError(f"data.validation_fraction: expected a share in [0, 1), got {fraction}")
    n = round(fraction * n_train)
    return tuple(sorted(torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n].tolist()))


def _source_id(cfg: Config, store: ArtifactStore) -> tuple[Path, dict]:
    if cfg.data.vqa_root is None:
        root = store.ensure("world", stage_key("world", world=dataclasses.asdict(cfg.world)),
                            lambda d: generate_world(cfg.world, d))
        return root, {"world": root.name}
    root = Path(cfg.data.vqa_root).expanduser().resolve()
    files = [f(root, s) for s in SPLITS for f in (question_file, annotation_file)] + [prompt_file(root)]
    return root, {"vqa_root": str(root), "files": content_key(files)}


def content_key(paths) -> dict[str, str]:
    """SHA-256 of each input file that exists, by its folder and name: a key that follows every edit of the
    files a stage reads (their size and time would not: an edit can keep both)."""
    return {f"{p.parent.name}/{p.name}": file_sha256(p) for p in paths if p.exists()}


def ensure_data(cfg: Config, store: ArtifactStore | None = None) -> Data:
    store = store or ArtifactStore()
    root, source = _source_id(cfg, store)
    if cfg.data.meta_dir is not None:
        meta_dir = Path(cfg.data.meta_dir).resolve()
        meta_train, meta_test = load_meta_vqa(meta_dir)
        source = {**source, "meta_dir": str(meta_dir),
                  "meta_files": content_key([meta_dir / "meta_train.json", meta_dir / "meta_test.json"])}
    else:
        meta_cfg = stage_key("metavqa", source=source, split_seed=cfg.data.split_seed)
        meta = store.ensure("metavqa", meta_cfg,
                            lambda d: write_meta_vqa(*build_meta_vqa(root, cfg.data.split_seed), d))
        meta_train, meta_test = load_meta_vqa(meta)
        source = {**source, "metavqa": meta.name}
    prompts = prompt_file(root)
    templates = read_json(prompts) if prompts.exists() else {}
    validation = validation_tasks(len(meta_train), cfg.data.validation_fraction, cfg.data.validation_seed)
    if validation:   # in the source, so every stage downstream keys on which tasks it may train on
        source = {**source, "validation": {"fraction": cfg.data.validation_fraction, "seed": cfg.data.validation_seed}}
    return Data(root, TaskSplit.from_meta(meta_train, meta_test), templates, source, validation)


def encoder_backend(cfg: Config) -> str:
    backend = cfg.encoder.backend
    if backend == "auto":
        return "world_clip" if cfg.data.vqa_root is None else "open_clip"
    if backend not in ("world_clip", "open_clip"):
        raise ValueError(f"encoder.backend is {backend!r}; expected 'auto', 'world_clip' or 'open_clip'")
    return backend


def world_clip_config(cfg: Config) -> dict:
    return stage_key("world_clip", clip=encoders.world_clip_fields(cfg.world_clip), scenes=scene_config(cfg.world),
                     text_tower=encoders.MINILM_PACKAGE)


# Trained world CLIPs shipped with the library, as real CLIP's weights are a downloaded artifact in the paper's
# pipeline: an artifact store of its own (hyperclip_lib/assets/README.md: SHA-256s and the command that rebuilt
# each). Its training is the largest single computation of `quick`, and every number downstream depends on it.
SHIPPED = Path(__file__).resolve().parent.parent / "assets"


def shipped_world_clip(cfg: Config) -> Path | None:
    """The shipped world CLIP for this config's key, checked against its manifest; None if none is shipped."""
    shipped, key = ArtifactStore(SHIPPED), world_clip_config(cfg)
    path = shipped.path("world_clip", key)
    if not path.exists():
        return None
    problem = shipped.verify(path, key)
    if problem is not None:
        raise ArtifactError(f"shipped world CLIP: {problem}; restore it with git checkout {path}")
    return path


def train_world_clip_into(cfg: Config, store: ArtifactStore) -> Path:
    """Train the config's world CLIP into `store` (what `hyperclip train-world-clip` runs)."""
    return store.ensure("world_clip", world_clip_config(cfg),
                        lambda d: encoders.train_world_clip(cfg.world_clip, cfg.world, d))


def ensure_world_clip(cfg: Config, store: ArtifactStore | None = None) -> Path:
    """The world CLIP: the shipped one where this key has one, else trained (and cached)."""
    store = store or ArtifactStore()
    shipped = shipped_world_clip(cfg)
    if shipped is None:
        return train_world_clip_into(cfg, store)

    def copy(folder: Path) -> None:
        for name in json.loads((shipped / MANIFEST).read_text())["files"]:
            shutil.copy2(shipped / name, folder / name)

    return store.ensure("world_clip", world_clip_config(cfg), copy)


def load_encoder(cfg: Config, store: ArtifactStore | None = None) -> encoders.Encoder:
    if encoder_backend(cfg) == "world_clip":
        path = ensure_world_clip(cfg, store)
        return encoders.load_world_clip(path, cfg.world_clip, cfg.world, cfg.encoder.device, cfg.encoder.batch_size)
    return encoders.open_clip_encoder(cfg.encoder.model, cfg.encoder.pretrained, cfg.encoder.device,
                                      cfg.encoder.batch_size)


def answer_prompts(question: str, answers, templates: dict[str, str], default: str) -> list[str]:
    """One sentence per answer, as the authors: the question's template, underscores as spaces."""
    template = templates.get(question, default)
    return [template.format(a.replace("_", " ")) for a in answers]


def features_key(cfg: Config, data: Data) -> dict:
    """What the features depend on: the data, the encoder, a features file's content and the prompt template."""
    backend = encoder_backend(cfg)
    enc_key = (world_clip_config(cfg) if backend == "world_clip"
               else {"model": cfg.encoder.model, "pretrained": cfg.encoder.pretrained})
    if cfg.data.image_features is not None:
        enc_key = {**enc_key, "image_features": content_key([feature_file_path(cfg)])}
    return stage_key("features", data=data.source, encoder={backend: enc_key},
                     prompt_template=cfg.encoder.prompt_template, device=cfg.encoder.device)


def feature_file_path(cfg: Config) -> Path:
    path = Path(cfg.data.image_features).expanduser().resolve()
    if encoder_backend(cfg) != "open_clip":
        raise FeatureFileError(f"data.image_features ({path}) needs real VQA and an open_clip encoder: set "
                               "data.vqa_root (with data.meta_dir, a folder holding Annotations/prompt_meta.json "
                               "is enough) and encoder.model / encoder.pretrained as the file was made")
    if not path.exists():
        raise FeatureFileError(f"data.image_features: {path}: features file not found")
    return path


def image_paths(data: Data) -> list[Path]:
    """The image file of every image the split uses, in `split.image_names()` order."""
    paths = []
    for n in data.split.image_names():
        p = find_image(data.vqa_root, n)
        if p is None:
            raise MetaVQAError(f"{data.vqa_root}/Images/mscoco: image {n}(.jpg|.png) not found")
        paths.append(p)
    return paths


def split_texts(split: TaskSplit, templates: dict[str, str], default_template: str
                ) -> tuple[list[str], dict[str, list[str]]]:
    """The split's questions, and each question's answer prompts (one per answer, in the task's order)."""
    tasks = split.all_tasks()
    return [t.question for t in tasks], {
        t.question: answer_prompts(t.question, t.answers, templates, default_template) for t in tasks}


def texts_to_embed(split: TaskSplit, templates: dict[str, str], default_template: str) -> list[str]:
    """Every question and answer prompt of the split, each once: what a features file holds beside the images."""
    questions, prompts = split_texts(split, templates, default_template)
    return list(dict.fromkeys(questions + [p for q in questions for p in prompts[q]]))


def load_feature_file(cfg: Config, data: Data) -> FeatureFile:
    """The config's features file, checked against its encoder (name, width) and the split's images."""
    name, _ = encoders.open_clip_identity(cfg.encoder.model, cfg.encoder.pretrained)
    return FeatureFile.load(feature_file_path(cfg), encoder=name, dim=encoders.open_clip_width(cfg.encoder.model),
                            images=data.split.image_names())


def ensure_features(cfg: Config, store: ArtifactStore | None = None, data: Data | None = None) -> FeatureStore:
    """Image features (encoded here, or read from `data.image_features`), question and answer-prompt
    embeddings (the encoder's text tower, or the features file when it holds every one of them)."""
    store = store or ArtifactStore()
    data = data or ensure_data(cfg, store)
    key = features_key(cfg, data)

    def build(folder: Path) -> None:
        names = data.split.image_names()
        questions, prompts = split_texts(data.split, data.templates, cfg.encoder.prompt_template)
        flat = [p for q in questions for p in prompts[q]]
        file = load_feature_file(cfg, data) if cfg.data.image_features is not None else None
        texts = file.text_lookup(questions + flat) if file is not None else None
        if texts is None:
            enc = load_encoder(cfg, store)
            texts = torch.cat([enc.encode_texts(questions), enc.encode_texts(flat, progress=True)])
            identity = enc.identity
        else:   # every text is in the file: the encoder is never loaded
            name, config = encoders.open_clip_identity(cfg.encoder.model, cfg.encoder.pretrained)
            identity = {"name": name, "config_hash": config_hash(config), "dim": int(texts.shape[1])}
        image_features = file.images(names) if file is not None else enc.encode_images(image_paths(data), progress=True)
        question_embeddings, flat_emb = texts[:len(questions)], texts[len(questions):]
        answer_embeddings, i = {}, 0
        for q in questions:
            answer_embeddings[q] = flat_emb[i:i + len(prompts[q])].clone()
            i += len(prompts[q])
        FeatureStore(identity, names, image_features, questions, question_embeddings,
                     {t.question: list(t.answers) for t in data.split.all_tasks()}, prompts,
                     answer_embeddings).save(folder)

    return FeatureStore.load(store.ensure("features", key, build))


def prepare(cfg: Config, store: ArtifactStore | None = None) -> dict:
    """Build everything notebook 01 shows, timing each stage."""
    store = store or ArtifactStore()
    timings = {}
    t = time.perf_counter()
    data = ensure_data(cfg, store)
    timings["world + Meta-VQA"] = time.perf_counter() - t
    if encoder_backend(cfg) == "world_clip":
        t = time.perf_counter()
        ensure_world_clip(cfg, store)
        timings["world CLIP"] = time.perf_counter() - t
    t = time.perf_counter()
    features = ensure_features(cfg, store, data)
    timings["features"] = time.perf_counter() - t
    return {"data": data, "features": features, "timings": timings, "config_hash": config_hash(cfg.to_dict())}
