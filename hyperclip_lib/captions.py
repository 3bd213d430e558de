"""The world CLIP's pretraining data: a stream of fresh Shapes-world scenes, disjoint from the VQA files,
and captions that teach what the questions ask (attributes with places, relations, counts)."""
from __future__ import annotations

import numpy as np

from .config import WorldConfig
from .world import (COUNT_WORDS, RELATIONS, SceneObject, plural, position_name, reading_order, related_objects,
                    render_scene, sample_scene, world_habits)


def world_image_stream(cfg: WorldConfig, seed: int, moved_twins: bool = False):
    """An endless stream of (image, objects) from a seed of its own, disjoint from the VQA files:
    the world CLIP is pretrained on these, as real CLIP is pretrained on images outside VQA.

    With `moved_twins`, scenes come in pairs: the same objects, then the same objects in other
    cells. In one contrastive batch the twins are hard negatives that differ only in where things
    are, so the image features must encode position, which attribute sets alone never require.
    """
    rng = np.random.default_rng([cfg.seed, 1, seed])
    habits = world_habits(cfg)
    while True:
        objects = sample_scene(rng, cfg, habits)
        yield render_scene(objects, cfg, rng), objects
        if moved_twins:
            cells = rng.choice(cfg.grid * cfg.grid, size=len(objects), replace=False)
            moved = reading_order(SceneObject(o.shape, o.color, o.size, int(c) // cfg.grid, int(c) % cfg.grid)
                                  for o, c in zip(objects, cells))
            yield render_scene(moved, cfg, rng), moved


def describe_object(o: SceneObject, grid: int) -> str:
    return f"a {o.size} {o.color} {o.shape} at the {position_name(o.row, o.col, grid)}"


def scene_description(objects: list[SceneObject], grid: int) -> str:
    """Every object with its attributes and place, in reading order: the caption that binds them all."""
    parts = [describe_object(o, grid) for o in reading_order(objects)]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_captions(objects: list[SceneObject], grid: int, rng: np.random.Generator, k: int,
                   full_scene_prob: float = 0.0) -> list[str]:
    """k captions of a scene: the full description, or one object, a pairwise relation or a count."""
    out = []
    for _ in range(k):
        o = objects[int(rng.integers(len(objects)))]
        if rng.random() < full_scene_prob:
            out.append(scene_description(objects, grid))
            continue
        kind = rng.choice(3, p=[0.5, 0.25, 0.25])   # one object with its place, a relation, a count
        pairs = [(a, rel, b) for a in objects for b in objects if a is not b
                 for rel in RELATIONS if a in related_objects(objects, b, rel)] if kind == 1 else []
        if pairs:
            a, rel, b = pairs[int(rng.integers(len(pairs)))]
            out.append(f"a {a.color} {a.shape} {rel} a {b.color} {b.shape}")
        elif kind == 2:
            attr = ("color", "shape")[int(rng.integers(2))]
            value = getattr(o, attr)
            n = sum(1 for x in objects if getattr(x, attr) == value)
            noun = f"{value} objects" if attr == "color" else plural(value)
            noun = noun if n > 1 else (f"{value} object" if attr == "color" else value)
            out.append(f"{COUNT_WORDS[n]} {noun}")
        else:
            out.append(describe_object(o, grid))
    return out
