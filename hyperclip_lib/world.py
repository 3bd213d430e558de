"""The Shapes world: a seeded generator of 2-D scenes, captions and templated questions.

Scenes are objects (shape, colour, size) on a G×G grid, at most one per cell, rendered as
small RGB images. Every question is asked only where its answer is unique in the scene, and
the world is written to disk in the VQA v2 layout, so the Meta-VQA builder reads it exactly
as it reads the real dataset (DESIGN §1, §4).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .config import WorldConfig
from .metavqa import annotation_file, image_dir, image_name, prompt_file, question_file
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


SCENE_FIELDS = ("seed", "image_size", "grid", "min_objects", "max_objects", "color_concentration",
                "cell_concentration", "size_concentration")


def scene_config(cfg: WorldConfig) -> dict:
    """The fields that shape scenes (not how many are asked about): what the world CLIP depends on."""
    return {f: getattr(cfg, f) for f in SCENE_FIELDS}


def position_name(row: int, col: int, grid: int) -> str:
    """'top left', 'top', ..., 'center', ... for a cell of the grid (rows and columns split in thirds)."""
    third = lambda i: 0 if i < grid / 3 else (2 if i >= grid - grid / 3 else 1)  # noqa: E731
    vertical = ("top", "", "bottom")[third(row)]
    horizontal = ("left", "", "right")[third(col)]
    return " ".join(w for w in (vertical, horizontal) if w) or "center"


def reading_order(objects) -> list[SceneObject]:
    """Objects row by row, left to right: how scenes are stored and described."""
    return sorted(objects, key=lambda o: (o.row, o.col))


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


# ---------------------------------------------------------------------------------------------
# Scenes and rendering


@dataclass(frozen=True)
class Habits:
    """Per-shape habits, like the real world's (bananas are yellow, the sky is at the top): each
    shape's distribution over colours and cells and its chance of being large. They skew every
    task's answers, so a task's prior is learnable from its data — and from related tasks."""
    colors: dict[str, np.ndarray]
    cells: dict[str, np.ndarray]
    p_large: dict[str, float]


def world_habits(cfg: WorldConfig) -> Habits:
    rng = np.random.default_rng([cfg.seed, 7])
    n_cells = cfg.grid * cfg.grid
    return Habits(
        colors={s: rng.dirichlet(np.full(len(COLORS), cfg.color_concentration)) for s in SHAPES},
        cells={s: rng.dirichlet(np.full(n_cells, cfg.cell_concentration)) for s in SHAPES},
        p_large={s: float(rng.beta(cfg.size_concentration, cfg.size_concentration)) for s in SHAPES},
    )


def sample_scene(rng: np.random.Generator, cfg: WorldConfig, habits: Habits) -> list[SceneObject]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    free = np.ones(cfg.grid * cfg.grid, dtype=bool)
    colors = list(COLORS)
    objects = []
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        p = habits.cells[shape] * free
        cell = int(rng.choice(len(p), p=p / p.sum()))
        free[cell] = False
        color = colors[int(rng.choice(len(colors), p=habits.colors[shape]))]
        size = SIZES[int(rng.random() < habits.p_large[shape])]
        objects.append(SceneObject(shape, color, size, cell // cfg.grid, cell % cfg.grid))
    return reading_order(objects)


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


def related_objects(objects, ref: SceneObject, relation: str) -> list[SceneObject]:
    drow, dcol = RELATIONS[relation]
    if drow == 0:
        return [o for o in objects if o.row == ref.row and (o.col - ref.col) * dcol > 0]
    return [o for o in objects if o.col == ref.col and (o.row - ref.row) * drow > 0]


# Each family's question phrasings (VQA asks the same thing many ways) and the sentence an answer
# is slotted into to make its prompt; {s} is the subject, e.g. "small star on the left".
FAMILIES = {
    "color": (("What color is the {s}?", "What is the color of the {s}?", "Which color does the {s} have?"),
              "the {s} is {{}}."),
    "shape": (("What shape is the {s}?", "What is the shape of the {s}?", "Which shape is the {s}?"),
              "the {s} is a {{}}."),
    "position": (("Where is the {s}?", "Where is the {s} located?"), "the {s} is at the {{}}."),
    "count": (("How many {s} are there?", "How many {s} are in the picture?"), "there are {{}} {s}."),
    "relation-color": (("What color is the object {s}?",), "the object {s} is {{}}."),
    "relation-shape": (("What shape is the object {s}?",), "the object {s} is a {{}}."),
    "yes-no": (("Is there a {s}?",), "{{}}, there is a {s}."),
    "choice": (("Is the {s}?",), "the {s}: {{}}."),
}
ANSWER_TYPES = {"count": "number", "yes-no": "yes/no"}


def question_family(question: str) -> str | None:
    """The family a Shapes-world question was asked from, or None for any other question."""
    for family in sorted(FAMILIES, key=lambda f: not f.startswith("relation")):   # the specific forms first
        for phrasing in FAMILIES[family][0]:
            if re.fullmatch(re.escape(phrasing).replace(re.escape("{s}"), ".+"), question):
                return family
    return None


def question_label(question: str) -> str:
    """A short label to group questions by in plots: the world's question family, else the first two words."""
    return question_family(question) or " ".join(question.split()[:2])


def scene_questions(objects: list[SceneObject], grid: int) -> list[tuple[str, str, str, str, str]]:
    """Every question this scene answers uniquely: (question, answer, VQA answer_type, family, prompt template)."""
    qs: list[tuple[str, str, str, str, str]] = []

    def ask(family: str, subject: str, answer: str) -> None:
        phrasings, prompt = FAMILIES[family]
        for phrasing in phrasings:
            qs.append((phrasing.format(s=subject), answer, ANSWER_TYPES.get(family, "other"), family,
                       prompt.format(s=subject)))

    def unique(pred):
        hits = [o for o in objects if pred(o)]
        return hits[0] if len(hits) == 1 else None

    # the colour of an object picked out by its shape, and the shape of one picked out by its colour,
    # each optionally narrowed by size and location
    for family, key, values in (("color", "shape", SHAPES), ("shape", "color", COLORS)):
        for value in values:
            for size in (None, *SIZES):
                for where, in_region in (None, None), *LOCATION_FILTERS.items():
                    o = unique(lambda o: getattr(o, key) == value and (size is None or o.size == size)
                               and (in_region is None or in_region(o, grid)))
                    if o:
                        ask(family, _phrase(size=size, where=where, **{key: value}), getattr(o, family))
    # position of an object picked out by colour and shape (its size is never asked: a two-way
    # answer is nearly a yes/no question, and the builder's rules keep those out of Meta-VQA)
    for color in COLORS:
        for shape in SHAPES:
            o = unique(lambda o: o.color == color and o.shape == shape)
            if o:
                ask("position", f"{color} {shape}", position_name(o.row, o.col, grid))
    # counting, asked only where at least one object matches (VQA rarely counts absent things)
    for size, color, shape in ([(None, None, None)] + [(z, None, None) for z in SIZES]
                               + [(None, c, s) for c in (None, *COLORS) for s in (None, *SHAPES) if c or s]):
        n = sum(1 for o in objects if (size is None or o.size == size)
                and (color is None or o.color == color) and (shape is None or o.shape == shape))
        if n:
            ask("count", " ".join(w for w in (size, color, plural(shape) if shape else "objects") if w), str(n))
    # relations: colour / shape of the one object beside a reference picked out by shape (and size)
    for relation in RELATIONS:
        for shape in SHAPES:
            for size in (None, *SIZES):
                ref = unique(lambda o: o.shape == shape and (size is None or o.size == size))
                near = related_objects(objects, ref, relation) if ref else []
                if len(near) == 1:
                    subject = f"{relation} the {_phrase(size=size, shape=shape)}"
                    ask("relation-color", subject, near[0].color)
                    ask("relation-shape", subject, near[0].shape)
    # yes/no and either-or questions: VQA has them, and the Meta-VQA builder must drop them
    for shape in SHAPES:
        ask("yes-no", shape, "yes" if any(o.shape == shape for o in objects) else "no")
        o = unique(lambda o: o.shape == shape)
        if o:
            other = sorted(c for c in COLORS if c != o.color)[len(objects) % (len(COLORS) - 1)]
            a, b = sorted([o.color, other])
            ask("choice", f"{shape} {a} or {b}", o.color)
    return qs


# ---------------------------------------------------------------------------------------------
# Writing the world in the VQA v2 layout


def generate_world(cfg: WorldConfig, root: Path) -> dict:
    """Write images, questions, annotations and answer-prompt templates under `root` (VQA v2 layout).

    Returns summary statistics. Question quotas cap how often one question string is asked, so
    common questions don't swamp the dataset (Meta-VQA tasks hold tens of samples each).
    """
    root = Path(root)
    rng = np.random.default_rng([cfg.seed, 0])
    habits = world_habits(cfg)
    asked: Counter[str] = Counter()
    templates: dict[str, str] = {}
    families: Counter[str] = Counter()
    n_train = cfg.n_images - round(cfg.n_images * cfg.val_fraction)
    splits = {"train2014": range(1, n_train + 1), "val2014": range(n_train + 1, cfg.n_images + 1)}
    for split, image_ids in splits.items():
        img_dir = image_dir(root, split)
        img_dir.mkdir(parents=True, exist_ok=True)
        questions, annotations = [], []
        for image_id in tqdm(image_ids, desc=f"world {split}", leave=False):
            objects = sample_scene(rng, cfg, habits)
            render_scene(objects, cfg, rng).save(img_dir / f"{image_name(split, image_id)}.png")
            candidates = scene_questions(objects, cfg.grid)
            order = rng.permutation(len(candidates))
            k = 0
            for idx in order:
                question, answer, answer_type, family, prompt = candidates[idx]
                quota = cfg.max_per_question if family not in ("yes-no", "choice") else cfg.max_per_filtered_question
                if asked[question] >= quota:
                    continue
                asked[question] += 1
                families[family] += 1
                templates.setdefault(question, prompt)
                qid = image_id * 1000 + k
                k += 1
                questions.append({"image_id": image_id, "question": question, "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": " ".join(question.split()[:2]).lower(),
                    "answer_type": answer_type, "multiple_choice_answer": answer,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)],
                })
        atomic_write_json(question_file(root, split),
                          {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split,
                           "questions": questions})
        atomic_write_json(annotation_file(root, split),
                          {"data_type": "mscoco", "data_subtype": split, "annotations": annotations})
    atomic_write_json(prompt_file(root), templates)
    return {"images": cfg.n_images, "questions": sum(asked.values()), "distinct_questions": len(asked),
            "by_family": dict(families)}
