"""The world CLIP's pretraining data: a stream of fresh Shapes-world scenes, disjoint from the VQA files,
and their captions, in one of two styles:

* "questions" (world v2): captions that teach what the questions ask — an object with its attributes and
  its cell, a relation between two objects, or a count;
* "alt-text" (world v3's candidate): what a web page says about a picture, as real CLIP's captions — a few
  of its objects, the large ones first, by kind, mostly with their colour, groups sometimes with their
  number, and now and then a rough place ("on the left"). Never a relation, a cell's name or a count of
  everything: what the questions ask is in the pixels, and only partly in the captions.
"""
from __future__ import annotations

import numpy as np

from .config import WorldClipConfig, WorldConfig
from .world import (COUNT_WORDS, RELATIONS, SceneObject, grid_band, plural, position_name, reading_order, related_objects,
                    render_scene, sample_scene, world_habits)


def world_image_stream(cfg: WorldConfig, seed: int, moved_twins: bool = False, count_twin_prob: float = 0.0):
    """An endless stream of (image, objects) from a seed of its own, disjoint from the VQA files:
    the world CLIP is pretrained on these, as real CLIP is pretrained on images outside VQA.

    With `moved_twins`, scenes come in pairs: the same objects, then the same objects in other
    cells. In one contrastive batch the twins are hard negatives that differ only in where things
    are, so the image features must encode position, which attribute sets alone never require.
    With probability `count_twin_prob` a pair's second scene is instead a *count twin* (`count_twin`):
    one more or one fewer of a kind, so that telling the twins apart takes counting.
    """
    rng = np.random.default_rng([cfg.seed, 1, seed])
    habits = world_habits(cfg)
    while True:
        objects = sample_scene(rng, cfg, habits)
        yield render_scene(objects, cfg, rng), objects
        if moved_twins and count_twin_prob and rng.random() < count_twin_prob:
            twin = count_twin(objects, cfg.grid, rng)
            if twin is not None:
                yield render_scene(twin, cfg, rng), twin
                continue
        if moved_twins:
            cells = rng.choice(cfg.grid * cfg.grid, size=len(objects), replace=False)
            moved = reading_order(SceneObject(o.shape, o.color, o.size, int(c) // cfg.grid, int(c) % cfg.grid)
                                  for o, c in zip(objects, cells))
            yield render_scene(moved, cfg, rng), moved


def count_twin(objects: list[SceneObject], grid: int, rng: np.random.Generator) -> list[SceneObject] | None:
    """The scene with one more of a kind it holds (a copy of one of its objects in a free cell) or one fewer of
    a kind it holds more than one of, every other object where it was; None where neither can be done."""
    free = sorted(set(range(grid * grid)) - {o.row * grid + o.col for o in objects})
    removable = sorted({o.shape for o in objects if sum(x.shape == o.shape for x in objects) > 1})
    if free and (not removable or rng.random() < 0.5):
        model = objects[int(rng.integers(len(objects)))]
        cell = free[int(rng.integers(len(free)))]
        return reading_order([*objects, SceneObject(model.shape, model.color, model.size, cell // grid, cell % grid)])
    if not removable:
        return None
    shape = removable[int(rng.integers(len(removable)))]
    group = [i for i, o in enumerate(objects) if o.shape == shape]
    drop = group[int(rng.integers(len(group)))]
    return [o for i, o in enumerate(objects) if i != drop]


def changed_kind(scene: list[SceneObject], twin: list[SceneObject]) -> str | None:
    """The kind whose number differs between a scene and its count twin; None for moved twins."""
    def number(objects, shape):
        return sum(o.shape == shape for o in objects)
    return next((s for s in sorted({o.shape for o in scene + twin}) if number(scene, s) != number(twin, s)), None)


def describe_object(o: SceneObject, grid: int) -> str:
    return f"a {o.size} {o.color} {o.shape} at the {position_name(o.row, o.col, grid)}"


def scene_description(objects: list[SceneObject], grid: int) -> str:
    """Every object with its attributes and place, in reading order: the caption that binds them all."""
    parts = [describe_object(o, grid) for o in reading_order(objects)]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


ALT_TEXTS_PER_SCENE = 3   # fixed captions per pretraining scene in the "alt-text" style
ROUGH_PLACES = {"row": ("at the top", "in the middle", "at the bottom"), "col": ("on the left", "in the middle",
                                                                                  "on the right")}


def alt_text(objects: list[SceneObject], grid: int, rng: np.random.Generator,
             color_prob: float = WorldClipConfig.alt_color_prob,
             number_prob: float = WorldClipConfig.alt_number_prob,
             max_kinds: int = WorldClipConfig.alt_max_kinds,
             color_count_prob: float = WorldClipConfig.alt_color_count_prob, lead: str | None = None) -> str:
    """One alt-text-like caption: up to `max_kinds` kinds of the scene, large ones first, e.g. 'a red star,
    three blue hearts on the left and a circle'; a kind of one colour is named with it with probability
    `color_prob`, a group with its number with probability `number_prob` ("some" otherwise). With
    probability `color_count_prob` the caption ends with how many things share a colour that several kinds
    have ('..., five red things in all'), as a page says how much of something red a picture holds: a number
    over kinds, as the counting questions' are, never within a row, a column or a size. A `lead` kind (a count
    twin's) is named first, always with its number."""
    kinds: dict[str, list[SceneObject]] = {}
    for o in sorted(objects, key=lambda o: (o.size != "large", rng.random())):
        kinds.setdefault(o.shape, []).append(o)
    named = sorted(kinds.items(), key=lambda kind: kind[0] != lead) if lead is not None else list(kinds.items())
    parts = []
    for shape, group in named[:int(rng.integers(1, max_kinds + 1))]:
        colors = {o.color for o in group}
        color = group[0].color if len(colors) == 1 and rng.random() < color_prob else None
        if len(group) == 1:
            words = ["a", group[0].size if rng.random() < 0.3 else None, color, shape]
        else:
            number = COUNT_WORDS[len(group)] if shape == lead or rng.random() < number_prob else "some"
            words = [number, color, plural(shape)]
        if rng.random() < 0.2:
            axis = ("row", "col")[int(rng.integers(2))]
            lines = {grid_band(getattr(o, axis), grid) for o in group}
            if len(lines) == 1:
                words.append(ROUGH_PLACES[axis][lines.pop()])
        text = " ".join(w for w in words if w)
        parts.append("an" + text[1:] if text.startswith("a ") and text[2] in "aeiou" else text)
    caption = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if color_count_prob and rng.random() < color_count_prob:
        shared = sorted(c for c in {o.color for o in objects} if len({o.shape for o in objects if o.color == c}) > 1)
        if shared:
            color = shared[int(rng.integers(len(shared)))]
            caption += f", {COUNT_WORDS[sum(o.color == color for o in objects)]} {color} things in all"
    return caption


def scene_captions(objects: list[SceneObject], grid: int, rng: np.random.Generator, k: int,
                   full_scene_prob: float = 0.0, style: str = "questions",
                   **alt_text_args) -> list[str]:
    """k captions of a scene in a style of the module docstring; "questions": the full description, or one
    object, a pairwise relation or a count; "alt-text": `alt_text`'s, with `alt_text_args`."""
    if style == "alt-text":
        return [alt_text(objects, grid, rng, **alt_text_args) for _ in range(k)]
    if style != "questions":
        raise ValueError(f"world_clip.caption_style: expected 'questions' or 'alt-text', got {style!r}")
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
