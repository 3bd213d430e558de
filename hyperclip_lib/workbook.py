"""The notebooks' one set-up call: papermill parameters in, config, data, features and where results go out.

    wb = open_workbook(profile, overrides, vqa_root=vqa_root, ..., seeds=seeds, results_dir=results_dir)
    wb.cfg, wb.data, wb.features, wb.test_tasks, wb.seeds, wb.results_dir, wb.save(fig, "02_baselines")
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from . import numerics
from .config import Config, default_seeds, notebook_config
from .features import FeatureStore
from .models.families import AdapterFamily
from .plots import save_figure
from .stages.baselines import adapter_scorer
from .stages.data import Data, prepare
from .taskdata import TaskTensors

REPOSITORY = Path(__file__).resolve().parent.parent


def default_results_dir(profile: str) -> Path:
    """Where a notebook run by hand writes its records: runs/<profile>/records at the repository root."""
    return REPOSITORY / "runs" / profile / "records"


@dataclass
class Workbook:
    cfg: Config
    seeds: list[int]
    results_dir: Path
    figures_dir: Path | None
    data: Data
    features: FeatureStore
    timings: dict[str, float]   # seconds each data stage took in this call (cached ones: little)

    @cached_property
    def train_tasks(self) -> TaskTensors:
        return TaskTensors.from_tasks(self.features, self.data.train_tasks)

    @cached_property
    def test_tasks(self) -> TaskTensors:
        return TaskTensors.from_tasks(self.features, self.data.split.test)

    @cached_property
    def scorer(self) -> AdapterFamily:
        """Scores any adapter weights W on any task."""
        return adapter_scorer(self.cfg, self.features)

    def answers(self, tasks: TaskTensors) -> list[list[str]]:
        return [self.features.answers[q] for q in tasks.questions]

    def save(self, fig, name: str) -> Path:
        """Save a figure as `name`_<profile>.png/.svg into the notebook's figures folder."""
        return save_figure(fig, f"{name}_{self.cfg.profile}", self.figures_dir)


def open_workbook(profile: str, overrides: Mapping[str, Any] | None = None, *, vqa_root: str | None = None,
                  meta_dir: str | None = None, clip_model: str | None = None, clip_pretrained: str | None = None,
                  device: str | None = None, seeds=None, results_dir: str | None = None,
                  figures_dir: str | None = None, cfg: Config | None = None) -> Workbook:
    """Build (or load) the benchmark and its features for a notebook's parameters. `cfg` replaces the
    config the parameters would give (for a notebook that adjusts it first)."""
    cfg = cfg or notebook_config(profile, overrides, vqa_root=vqa_root, meta_dir=meta_dir, clip_model=clip_model,
                                 clip_pretrained=clip_pretrained, device=device)
    numerics.apply(cfg.compute.threads)
    prepared = prepare(cfg)
    return Workbook(cfg, list(seeds) if seeds is not None else default_seeds(cfg.profile),
                    Path(results_dir) if results_dir else default_results_dir(cfg.profile),
                    Path(figures_dir) if figures_dir else None, prepared["data"], prepared["features"],
                    prepared["timings"])
