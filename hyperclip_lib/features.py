"""The FeatureStore: everything downstream reads only this, never pixels or text.

Image features [N_images, D], question embeddings [N_tasks, D] and answer-prompt embeddings
per task, tagged with the identity of the encoder that made them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

FILE = "features.pt"


class FeatureMismatchError(RuntimeError):
    pass


@dataclass
class FeatureStore:
    encoder: dict                    # {"name", "config_hash", "dim"} of the encoder
    image_names: list[str]
    image_features: torch.Tensor     # [N_images, D], L2-normalised
    questions: list[str]
    question_embeddings: torch.Tensor  # [N_tasks, D]
    answers: dict[str, list[str]]    # question -> answers, in the order of its prompt embeddings
    prompts: dict[str, list[str]]    # question -> the prompt sentence of each answer
    answer_embeddings: dict[str, torch.Tensor]  # question -> [A, D]

    def __post_init__(self):
        self._image_index = {n: i for i, n in enumerate(self.image_names)}
        self._question_index = {q: i for i, q in enumerate(self.questions)}

    @property
    def dim(self) -> int:
        return self.image_features.shape[1]

    def image_rows(self, names) -> list[int]:
        """Rows of `image_features` holding the named images."""
        try:
            return [self._image_index[n] for n in names]
        except KeyError as e:
            raise KeyError(f"image {e.args[0]!r} has no features in this FeatureStore "
                           f"(encoder {self.encoder['name']})") from None

    def images(self, names) -> torch.Tensor:
        return self.image_features[self.image_rows(names)]

    def question(self, question: str) -> torch.Tensor:
        return self.question_embeddings[self._question_index[question]]

    def require(self, encoder: dict | None = None, dim: int | None = None,
                name_prefix: str | None = None) -> "FeatureStore":
        """Fail clearly when these features come from another encoder (its identity, or a name that does not
        start with `name_prefix`) or have another width."""
        if encoder is not None and encoder.get("config_hash") != self.encoder["config_hash"]:
            raise FeatureMismatchError(
                f"features were made by encoder {self.encoder['name']!r} but this stage expects "
                f"{encoder.get('name')!r}; rebuild the features or the stage with one encoder")
        if name_prefix is not None and not self.encoder["name"].startswith(name_prefix):
            raise FeatureMismatchError(
                f"features were made by encoder {self.encoder['name']!r} but this config's encoder is "
                f"{name_prefix}...; rebuild the features with the config's encoder")
        if dim is not None and dim != self.dim:
            raise FeatureMismatchError(f"features have dimension {self.dim} (encoder {self.encoder['name']!r}) "
                                       f"but this stage expects dimension {dim}")
        return self

    def save(self, folder: os.PathLike) -> Path:
        path = Path(folder) / FILE
        torch.save({"encoder": self.encoder, "image_names": self.image_names,
                    "image_features": self.image_features, "questions": self.questions,
                    "question_embeddings": self.question_embeddings, "answers": self.answers,
                    "prompts": self.prompts, "answer_embeddings": self.answer_embeddings}, path)
        return path

    @staticmethod
    def load(folder: os.PathLike) -> "FeatureStore":
        path = Path(folder) / FILE
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which, and why
            raise FeatureMismatchError(f"{path}: not a readable FeatureStore ({e})") from None
        return FeatureStore(**data)


# --- precomputed image features: extracted once on a GPU machine, studied anywhere ---------------------------

class FeatureFileError(ValueError):
    pass


@dataclass
class FeatureFile:
    """A file of precomputed features for a Meta-VQA split (`hyperclip extract-features` writes one): image names
    and their [N, D] features, the name of the encoder that made them (`Encoder.name`), and optionally texts
    (questions, answer prompts) with their [M, D] embeddings from the same encoder's text tower. Stored as
    `.npz` (no pickle)."""
    encoder: str
    image_names: list[str]
    image_features: torch.Tensor
    texts: list[str]
    text_embeddings: torch.Tensor

    def save(self, path: os.PathLike) -> Path:
        import io

        import numpy as np

        from .store import atomic_write_bytes
        buffer = io.BytesIO()
        width = self.image_features.shape[1]
        np.savez(buffer, encoder=np.array(self.encoder), image_names=np.array(self.image_names, dtype=str),
                 image_features=self.image_features.float().numpy(), texts=np.array(self.texts, dtype=str),
                 text_embeddings=self.text_embeddings.float().numpy().reshape(len(self.texts), width))
        atomic_write_bytes(path, buffer.getvalue())
        return Path(path)

    @staticmethod
    def load(path: os.PathLike, encoder: str | None = None, dim: int | None = None,
             images: list[str] | None = None) -> "FeatureFile":
        """Read and check a features file: readable, its arrays of matching shapes, no repeated image name, every
        value finite, of width `dim` and made by `encoder` (when given), holding every name in `images`. Each
        failure is a FeatureFileError naming the file and what was expected."""
        import numpy as np
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise FeatureFileError(f"{path}: features file not found") from None
        except Exception as e:
            raise FeatureFileError(f"{path}: not a features file written by `hyperclip extract-features` "
                                   f"(an .npz of image_names, image_features, encoder; {type(e).__name__}: {e})") from None
        for key in ("encoder", "image_names", "image_features"):
            if key not in arrays:
                raise FeatureFileError(f"{path}: field {key!r} missing (found: {', '.join(sorted(arrays))})")
        names = [str(n) for n in arrays["image_names"].reshape(-1)]
        feats = arrays["image_features"]
        if feats.ndim != 2 or feats.shape[0] != len(names):
            raise FeatureFileError(f"{path}: image_features has shape {tuple(feats.shape)}; expected "
                                   f"[{len(names)} image names, D]")
        texts = [str(t) for t in arrays.get("texts", np.array([], dtype=str)).reshape(-1)]
        text_emb = arrays.get("text_embeddings", np.zeros((0, feats.shape[1]), dtype=np.float32))
        if text_emb.ndim != 2 or text_emb.shape[0] != len(texts) or (texts and text_emb.shape[1] != feats.shape[1]):
            raise FeatureFileError(f"{path}: text_embeddings has shape {tuple(text_emb.shape)}; expected "
                                   f"[{len(texts)} texts, {feats.shape[1]}]")
        seen = set()
        for n in names:
            if n in seen:
                raise FeatureFileError(f"{path}: image {n!r} appears more than once in image_names")
            seen.add(n)
        for label, values, keys in (("image", feats, names), ("text", text_emb, texts)):
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                raise FeatureFileError(f"{path}: the features of {label} {keys[int(bad.argmax())]!r} hold NaN or "
                                       f"infinite values ({int(bad.sum())} {label}s in all)")
        made_by = str(arrays["encoder"])
        if encoder is not None and made_by != encoder:
            raise FeatureFileError(f"{path}: made by encoder {made_by!r}, but this config's encoder is {encoder!r} "
                                   "(set encoder.model / encoder.pretrained to the file's, or extract again)")
        if dim is not None and feats.shape[1] != dim:
            raise FeatureFileError(f"{path}: features of width {feats.shape[1]}; encoder {made_by!r} gives {dim}")
        if images is not None:
            missing = [n for n in images if n not in seen]
            if missing:
                raise FeatureFileError(f"{path}: {len(missing)} of the split's {len(images)} images have no features "
                                       f"(first: {', '.join(missing[:3])})")
        return FeatureFile(made_by, names, torch.from_numpy(feats.astype(np.float32)), texts,
                           torch.from_numpy(text_emb.astype(np.float32)))

    def images(self, names: list[str]) -> torch.Tensor:
        index = {n: i for i, n in enumerate(self.image_names)}
        return torch.nn.functional.normalize(self.image_features[[index[n] for n in names]], dim=-1)

    def text_lookup(self, texts: list[str]) -> torch.Tensor | None:
        """The embeddings of `texts` (L2-normalised) when the file holds every one of them, else None."""
        index = {t: i for i, t in enumerate(self.texts)}
        if not all(t in index for t in texts):
            return None
        return torch.nn.functional.normalize(self.text_embeddings[[index[t] for t in texts]], dim=-1)
