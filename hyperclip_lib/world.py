"""The Shapes world: a seeded generator of 2-D scenes, captions and templated questions.

Scenes are objects (shape, colour, size) on a G×G grid, at most one per cell, rendered as
small RGB images. Every question is asked only where its answer is unique in the scene, and
the world is written to disk in the VQA v2 layout, so the Meta-VQA builder reads it exactly
as it reads the real dataset (DESIGN §1, §4).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .config import WorldConfig
from .store import atomic_write_json

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS = {
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (240, 200, 20),
    "purple": (148, 73, 189), "orange": (255, 127, 14), "brown": (120, 72, 40), "black": (20, 20, 20),
}
SIZES = ("small", "large")
BACKGROUND = (236, 236, 236)
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int


def position_name(row: int, col: int, grid: int) -> str:
    """'top left', 'top', ..., 'center', ... for a cell of the grid (rows and columns split in thirds)."""
    third = lambda i: 0 if i < grid / 3 else (2 if i >= grid - grid / 3 else 1)  # noqa: E731
    vertical = ("top", "", "bottom")[third(row)]
    horizontal = ("left", "", "right")[third(col)]
    return " ".join(w for w in (vertical, horizontal) if w) or "center"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


# ---------------------------------------------------------------------------------------------
# Scenes and rendering


def color_preferences(cfg: WorldConfig) -> dict[str, np.ndarray]:
    """Per-shape colour distributions: like the real world (bananas are yellow), shapes have
    habitual colours, so a task's answers are skewed and its prior is learnable from data."""
    rng = np.random.default_rng([cfg.seed, 7])
    return {s: rng.dirichlet(np.full(len(COLORS), cfg.color_concentration)) for s in SHAPES}


def sample_scene(rng: np.random.Generator, cfg: WorldConfig, prefs: dict[str, np.ndarray]) -> list[SceneObject]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cells = rng.choice(cfg.grid * cfg.grid, size=n, replace=False)
    colors = list(COLORS)
    objects = []
    for cell in sorted(cells.tolist()):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = colors[int(rng.choice(len(colors), p=prefs[shape]))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        objects.append(SceneObject(shape, color, size, cell // cfg.grid, cell % cfg.grid))
    return objects


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return [(cx + rr * np.cos(a), cy - rr * np.sin(a)) for a, rr in zip(angles, radii)]
    if shape == "cross":
        w = r * 0.38
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_scene(objects: list[SceneObject], cfg: WorldConfig, rng: np.random.Generator) -> Image.Image:
    """Draw the scene; positions jitter inside their cell so no two images are pixel-identical."""
    img = Image.new("RGB", (cfg.image_size, cfg.image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = cfg.image_size / cfg.grid
    for obj in objects:
        r = cell * (0.42 if obj.size == "large" else 0.24)
        slack = cell / 2 - r - 0.5
        cx = (obj.col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (obj.row + 0.5) * cell + rng.uniform(-slack, slack)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif obj.shape == "square":
            s = r * 0.85
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        else:
            draw.polygon(_shape_polygon(obj.shape, cx, cy, r), fill=fill)
    return img


# ---------------------------------------------------------------------------------------------
# Questions: (question, answer, answer_type, family); asked only where the answer is unique


def _phrase(*, size=None, color=None, shape=None, where=None) -> str:
    words = [w for w in (size, color) if w]
    words.append(shape or "object")
    phrase = " ".join(words)
    return f"{phrase} {where}" if where else phrase


LOCATION_FILTERS = {"on the left": lambda o, g: o.col == 0, "on the right": lambda o, g: o.col == g - 1,
                    "at the top": lambda o, g: o.row == 0, "at the bottom": lambda o, g: o.row == g - 1}


def _related(objects, ref: SceneObject, relation: str) -> list[SceneObject]:
    drow, dcol = RELATIONS[relation]
    if drow == 0:
        return [o for o in objects if o.row == ref.row and (o.col - ref.col) * dcol > 0]
    return [o for o in objects if o.col == ref.col and (o.row - ref.row) * drow > 0]


def scene_questions(objects: list[SceneObject], grid: int) -> list[tuple[str, str, str, str]]:
    """Every question this scene answers uniquely, with its answer, VQA answer_type and family."""
    qs: list[tuple[str, str, str, str]] = []

    def unique(pred):
        hits = [o for o in objects if pred(o)]
        return hits[0] if len(hits) == 1 else None

    # colour of an object picked out by shape, optional size, optional location
    for shape in SHAPES:
        for size in (None, *SIZES):
            for where, in_region in (None, None), *LOCATION_FILTERS.items():
                o = unique(lambda o: o.shape == shape and (size is None or o.size == size)
                           and (in_region is None or in_region(o, grid)))
                if o:
                    qs.append((f"What color is the {_phrase(size=size, shape=shape, where=where)}?",
                               o.color, "other", "color"))
    # shape of an object picked out by colour, optional size, optional location
    for color in COLORS:
        for size in (None, *SIZES):
            for where, in_region in (None, None), *LOCATION_FILTERS.items():
                o = unique(lambda o: o.color == color and (size is None or o.size == size)
                           and (in_region is None or in_region(o, grid)))
                if o:
                    qs.append((f"What shape is the {_phrase(size=size, color=color, where=where)}?",
                               o.shape, "other", "shape"))
    # size and position of an object picked out by colour and shape
    for color in COLORS:
        for shape in SHAPES:
            o = unique(lambda o: o.color == color and o.shape == shape)
            if o:
                qs.append((f"What size is the {color} {shape}?", o.size, "other", "size"))
                qs.append((f"Where is the {color} {shape}?", position_name(o.row, o.col, grid), "other", "position"))
    # counting, asked only where at least one object matches (VQA rarely counts absent things)
    for size in (None, *SIZES):
        for color in (None, *COLORS):
            for shape in (None, *SHAPES):
                n = sum(1 for o in objects if (size is None or o.size == size)
                        and (color is None or o.color == color) and (shape is None or o.shape == shape))
                if n:
                    noun = plural(shape) if shape else "objects"
                    words = " ".join(w for w in (size, color, noun) if w)
                    qs.append((f"How many {words} are there?", str(n), "number", "count"))
    # relations: colour / shape of the one object beside a reference picked out by shape (+ colour or size)
    for relation in RELATIONS:
        for shape in SHAPES:
            for qualifier in (None, *SIZES, *COLORS):
                is_size = qualifier in SIZES
                ref = unique(lambda o: o.shape == shape and (qualifier is None
                             or (o.size if is_size else o.color) == qualifier))
                if ref is None:
                    continue
                near = _related(objects, ref, relation)
                if len(near) != 1:
                    continue
                ref_phrase = _phrase(shape=shape, **({"size": qualifier} if is_size else {"color": qualifier}))
                qs.append((f"What color is the object {relation} the {ref_phrase}?", near[0].color, "other",
                           "relation-color"))
                qs.append((f"What shape is the object {relation} the {ref_phrase}?", near[0].shape, "other",
                           "relation-shape"))
    # yes/no and either-or questions: VQA has them, and the Meta-VQA builder must drop them
    for shape in SHAPES:
        present = any(o.shape == shape for o in objects)
        qs.append((f"Is there a {shape}?", "yes" if present else "no", "yes/no", "yes-no"))
        o = unique(lambda o: o.shape == shape)
        if o:
            other = sorted(c for c in COLORS if c != o.color)[len(objects) % (len(COLORS) - 1)]
            a, b = sorted([o.color, other])
            qs.append((f"Is the {shape} {a} or {b}?", o.color, "other", "choice"))
    return qs


PROMPT_TEMPLATES = {
    "color": "the {subject} is {{}}.",
    "shape": "the {subject} is a {{}}.",
    "size": "the {subject} is {{}}.",
    "position": "the {subject} is at the {{}}.",
    "count": "there are {{}} {subject}.",
    "relation-color": "the {subject} is {{}}.",
    "relation-shape": "the {subject} is a {{}}.",
    "yes-no": "{{}}, {subject}.",
    "choice": "the {subject} is {{}}.",
}


def answer_prompt_template(question: str, family: str) -> str:
    """The sentence an answer is slotted into, e.g. 'What color is the small star?' -> 'the small star is {}.'"""
    q = question.rstrip("?")
    for lead in ("What color is the ", "What shape is the ", "What size is the ", "Where is the ",
                 "How many ", "Is the ", "Is there "):
        if q.startswith(lead):
            subject = q[len(lead):]
            break
    else:
        raise ValueError(f"no answer prompt for question {question!r}")
    if family == "count":
        subject = subject.removesuffix(" are there")
    if family == "choice":
        subject = subject.rsplit(" ", 3)[0]
    return PROMPT_TEMPLATES[family].format(subject=subject)


# ---------------------------------------------------------------------------------------------
# Writing the world in the VQA v2 layout


def image_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}"


def generate_world(cfg: WorldConfig, root: Path) -> dict:
    """Write images, questions, annotations and answer-prompt templates under `root` (VQA v2 layout).

    Returns summary statistics. Question quotas cap how often one question string is asked, so
    common questions don't swamp the dataset (Meta-VQA tasks hold tens of samples each).
    """
    root = Path(root)
    rng = np.random.default_rng([cfg.seed, 0])
    prefs = color_preferences(cfg)
    asked: Counter[str] = Counter()
    templates: dict[str, str] = {}
    families: Counter[str] = Counter()
    n_train = cfg.n_images - round(cfg.n_images * cfg.val_fraction)
    splits = {"train2014": range(1, n_train + 1), "val2014": range(n_train + 1, cfg.n_images + 1)}
    for split, image_ids in splits.items():
        img_dir = root / "Images" / "mscoco" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        questions, annotations = [], []
        for image_id in tqdm(image_ids, desc=f"world {split}", leave=False):
            objects = sample_scene(rng, cfg, prefs)
            render_scene(objects, cfg, rng).save(img_dir / f"{image_name(split, image_id)}.png")
            candidates = scene_questions(objects, cfg.grid)
            order = rng.permutation(len(candidates))
            k = 0
            for idx in order:
                question, answer, answer_type, family = candidates[idx]
                quota = cfg.max_per_question if family not in ("yes-no", "choice") else cfg.max_per_filtered_question
                if asked[question] >= quota:
                    continue
                asked[question] += 1
                families[family] += 1
                templates.setdefault(question, answer_prompt_template(question, family))
                qid = image_id * 1000 + k
                k += 1
                questions.append({"image_id": image_id, "question": question, "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": " ".join(question.split()[:2]).lower(),
                    "answer_type": answer_type, "multiple_choice_answer": answer,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)],
                })
        atomic_write_json(root / "Questions" / f"v2_OpenEnded_mscoco_{split}_questions.json",
                          {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split,
                           "questions": questions})
        atomic_write_json(root / "Annotations" / f"v2_mscoco_{split}_annotations.json",
                          {"data_type": "mscoco", "data_subtype": split, "annotations": annotations})
    atomic_write_json(root / "Annotations" / "prompt_meta.json", templates)
    return {"images": cfg.n_images, "questions": sum(asked.values()), "distinct_questions": len(asked),
            "by_family": dict(families)}


def world_image_stream(cfg: WorldConfig, seed: int):
    """An endless stream of (image, objects) from a seed of its own, disjoint from the VQA files:
    the world CLIP is pretrained on these, as real CLIP is pretrained on images outside VQA."""
    rng = np.random.default_rng([cfg.seed, 1, seed])
    prefs = color_preferences(cfg)
    while True:
        objects = sample_scene(rng, cfg, prefs)
        yield render_scene(objects, cfg, rng), objects


def scene_captions(objects: list[SceneObject], grid: int, rng: np.random.Generator, k: int) -> list[str]:
    """k captions of a scene: single objects with position, pairwise relations and counts."""
    out = []
    for _ in range(k):
        kind = rng.integers(3)
        o = objects[int(rng.integers(len(objects)))]
        if kind == 0 or len(objects) == 1:
            out.append(f"a {o.size} {o.color} {o.shape} at the {position_name(o.row, o.col, grid)}")
        elif kind == 1:
            pairs = [(a, rel, b) for a in objects for b in objects if a is not b
                     for rel in RELATIONS if a in _related(objects, b, rel)]
            if pairs:
                a, rel, b = pairs[int(rng.integers(len(pairs)))]
                out.append(f"a {a.color} {a.shape} {rel} a {b.color} {b.shape}")
            else:
                out.append(f"a {o.size} {o.color} {o.shape} at the {position_name(o.row, o.col, grid)}")
        else:
            attr = ("color", "shape")[int(rng.integers(2))]
            value = getattr(o, attr)
            n = sum(1 for x in objects if getattr(x, attr) == value)
            noun = f"{value} objects" if attr == "color" else plural(value)
            noun = noun if n > 1 else (f"{value} object" if attr == "color" else value)
            out.append(f"{COUNT_WORDS[n]} {noun}")
    return out
