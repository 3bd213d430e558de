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
