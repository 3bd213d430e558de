"""The Shapes world: a seeded generator of 2-D scenes, captions and templated questions.

Scenes are objects (one of 24 kinds, 13 colours, two sizes) on a G×G grid, at most one per cell,
rendered as small RGB images. Every question is asked only where its answer is unique in the
scene, and the world is written to disk in the VQA v2 layout, so the Meta-VQA builder reads it
exactly as it reads the real dataset (DESIGN §1, §4).

What makes it read like VQA (measured against the authors' split in docs/world-v2-calibration.md):
each concept (a question family and its subject) is asked in ONE phrasing, chosen by a hash of the
concept, so paraphrases never share scenes; relations are asked in one direction per reference
object; concepts differ mostly by nouns (kinds, colours), which a text encoder tells apart, rather
than by left/right or small/large, which it barely does; and each image is asked a few questions
drawn by a per-concept popularity, so samples per task have a long tail like VQA's.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .config import WORLD_V2, WorldConfig
from .metavqa import annotation_file, image_dir, image_name, prompt_file, question_file
from .store import atomic_write_json

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "heart", "arrow", "moon", "ring", "bar",
          "pillar", "house", "boat", "bowtie", "tee", "chevron", "cup", "frame", "dome", "tree", "flag",
          "hourglass", "bolt")
COLORS = {
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (240, 200, 20),
    "purple": (148, 73, 189), "orange": (255, 127, 14), "brown": (120, 72, 40), "black": (20, 20, 20),
    "pink": (247, 129, 191), "gray": (128, 128, 128), "cyan": (23, 190, 207), "lime": (160, 230, 40),
    "navy": (15, 30, 110),
}
SIZES = ("small", "large")
BACKGROUND = (236, 236, 236)
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
COUNT_WORDS = dict(enumerate(("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                               "twelve", "thirteen", "fourteen", "fifteen", "sixteen"), start=1))


# the rows (top to bottom) and then the columns (left to right) a question can name, per grid size; a 4×4 grid
# has no middle row
GRID_LINES = {3: ("top row", "middle row", "bottom row", "left column", "middle column", "right column"),
              4: ("top row", "second row", "third row", "bottom row", "left column", "second column", "third column",
                  "right column")}
# each line's (is a row, index), read off its place in GRID_LINES
_LINE_PLACES = {grid: {line: (i < grid, i % grid) for i, line in enumerate(lines)} for grid, lines in GRID_LINES.items()}


def grid_lines(grid: int) -> tuple[str, ...]:
    """The rows and columns a question can name on a grid of 3 or 4 cells a side."""
    if grid not in GRID_LINES:
        raise ValueError(f"world.grid must be one of {sorted(GRID_LINES)} for its rows and columns to have names, got {grid}")
    return GRID_LINES[grid]


def grid_band(i: int, grid: int) -> int:
    """0, 1 or 2: whether row (or column) i is the first, one in between, or the last of the grid."""
    return 0 if i == 0 else (2 if i == grid - 1 else 1)


# what counting questions pick things out by: nothing, one of size, colour and kind (world v2), or two
COUNT_FILTERS = ([(None, None, None)] + [(z, None, None) for z in SIZES] + [(None, c, None) for c in COLORS]
                 + [(None, None, s) for s in SHAPES] + [(z, c, None) for z in SIZES for c in COLORS]
                 + [(z, None, s) for z in SIZES for s in SHAPES])


def in_line(o: "SceneObject", line: str, grid: int) -> bool:
    """Whether an object sits in a row or column of the grid named as in grid_lines ('top row', 'second column')."""
    is_row, index = _LINE_PLACES[grid][line]
    return (o.row if is_row else o.col) == index


def stable_hash(*parts: object) -> int:
    """A hash of strings that is the same in every process (Python's hash() is salted)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int


SCENE_FIELDS = ("seed", "image_size", "grid", "min_objects", "max_objects", "shape_concentration",
                "color_concentration", "cell_concentration", "size_concentration")


# Scene fields world v2 did not have; at their v2 value they are left out of scene_config, so that world v2's
# shipped CLIPs keep their keys
LATER_SCENE_FIELDS = {f: WORLD_V2[f"world.{f}"] for f in ("repeat_prob", "repeat_color_prob")}


def scene_config(cfg: WorldConfig) -> dict:
    """The fields that shape scenes (not how many are asked about): what the world CLIP depends on."""
    return {**{f: getattr(cfg, f) for f in SCENE_FIELDS},
            **{f: getattr(cfg, f) for f, v2 in LATER_SCENE_FIELDS.items() if getattr(cfg, f) != v2}}


def position_name(row: int, col: int, grid: int) -> str:
    """'top left', 'top', ..., 'center', ... for a cell of the grid (the outer rows and columns, and those between)."""
    vertical = ("top", "", "bottom")[grid_band(row, grid)]
    horizontal = ("left", "", "right")[grid_band(col, grid)]
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
    """Per-kind habits, like the real world's (bananas are yellow, the sky is at the top, cars are
    common and zebras rare): how often each kind occurs, and each kind's distribution over colours
    and cells and its chance of being large. They skew every task's answers, so a task's prior is
    learnable from its data — and from related tasks."""
    prevalence: np.ndarray
    colors: dict[str, np.ndarray]
    cells: dict[str, np.ndarray]
    p_large: dict[str, float]


def world_habits(cfg: WorldConfig) -> Habits:
    rng = np.random.default_rng([cfg.seed, 7])
    n_cells = cfg.grid * cfg.grid
    return Habits(
        prevalence=rng.dirichlet(np.full(len(SHAPES), cfg.shape_concentration)),
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
        if objects and cfg.repeat_prob and rng.random() < cfg.repeat_prob:   # another of a kind already there
            group = objects[int(rng.integers(len(objects)))]
            shape = group.shape
        else:
            group, shape = None, SHAPES[int(rng.choice(len(SHAPES), p=habits.prevalence))]
        p = habits.cells[shape] * free
        cell = int(rng.choice(len(p), p=p / p.sum()))
        free[cell] = False
        color = colors[int(rng.choice(len(colors), p=habits.colors[shape]))]
        if group and cfg.repeat_color_prob and rng.random() < cfg.repeat_color_prob:   # groups often share a colour
            color = group.color
        size = SIZES[int(rng.random() < habits.p_large[shape])]
        objects.append(SceneObject(shape, color, size, cell // cfg.grid, cell % cfg.grid))
    return reading_order(objects)


# Glyphs as polygons in a unit box (x right, y down, radius 1); several parts are drawn one after another.
def _star() -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return [(r * np.cos(a), r * np.sin(a)) for a, r in zip(angles, radii)]


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [(float(a) / 16, -float(b) / 16 + 0.1) for a, b in zip(x, y)]


_STROKE = 0.38   # half-width of the cross's and the tee's strokes
GLYPHS: dict[str, list[list[tuple[float, float]]]] = {
    "square": [[(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]],
    "triangle": [[(0, -1), (0.95, 0.8), (-0.95, 0.8)]],
    "star": [_star()],
    "cross": [[(-_STROKE, -1), (_STROKE, -1), (_STROKE, -_STROKE), (1, -_STROKE), (1, _STROKE), (_STROKE, _STROKE),
               (_STROKE, 1), (-_STROKE, 1), (-_STROKE, _STROKE), (-1, _STROKE), (-1, -_STROKE), (-_STROKE, -_STROKE)]],
    "diamond": [[(0, -1), (0.75, 0), (0, 1), (-0.75, 0)]],
    "heart": [_heart()],
    "arrow": [[(-1, -0.3), (0.1, -0.3), (0.1, -0.75), (1, 0), (0.1, 0.75), (0.1, 0.3), (-1, 0.3)]],
    "bar": [[(-1, -0.35), (1, -0.35), (1, 0.35), (-1, 0.35)]],
    "pillar": [[(-0.35, -1), (0.35, -1), (0.35, 1), (-0.35, 1)]],
    "house": [[(0, -1), (0.9, -0.15), (0.9, 1), (-0.9, 1), (-0.9, -0.15)]],
    "boat": [[(-1, 0.1), (1, 0.1), (0.6, 0.8), (-0.6, 0.8)], [(0, -1), (0.7, 0.0), (0, 0.0)]],
    "bowtie": [[(-1, -0.8), (0, 0), (-1, 0.8)], [(1, -0.8), (0, 0), (1, 0.8)]],
    "hourglass": [[(-0.8, -1), (0.8, -1), (0, 0)], [(-0.8, 1), (0.8, 1), (0, 0)]],
    "tee": [[(-1, -1), (1, -1), (1, -0.4), (_STROKE - 0.1, -0.4), (_STROKE - 0.1, 1), (0.1 - _STROKE, 1),
             (0.1 - _STROKE, -0.4), (-1, -0.4)]],
    "chevron": [[(-1, -0.7), (0, 0.2), (1, -0.7), (1, 0.1), (0, 1), (-1, 0.1)]],
    "cup": [[(-1, -1), (-0.5, -1), (-0.5, 0.45), (0.5, 0.45), (0.5, -1), (1, -1), (1, 1), (-1, 1)]],
    "tree": [[(0, -1), (0.9, 0.4), (-0.9, 0.4)], [(-0.25, 0.4), (0.25, 0.4), (0.25, 1), (-0.25, 1)]],
    "flag": [[(-0.9, -1), (-0.55, -1), (-0.55, 1), (-0.9, 1)], [(-0.55, -1), (1, -0.55), (-0.55, -0.1)]],
    "bolt": [[(0.3, -1), (-0.7, 0.15), (-0.05, 0.15), (-0.3, 1), (0.7, -0.15), (0.05, -0.15)]],
}
# Glyphs drawn as (ImageDraw method, box x0, y0, x1, y1 in the unit box, fill: True for the object's colour,
# False for a background-coloured hole), in order.
SOLIDS = {"circle": [("ellipse", (-1, -1, 1, 1), True)],
          "ring": [("ellipse", (-1, -1, 1, 1), True), ("ellipse", (-0.5, -0.5, 0.5, 0.5), False)],
          "moon": [("ellipse", (-1, -1, 1, 1), True), ("ellipse", (-0.2, -1, 1, 0.5), False)],
          "frame": [("rectangle", (-0.9, -0.9, 0.9, 0.9), True), ("rectangle", (-0.45, -0.45, 0.45, 0.45), False)]}


def render_scene(objects: list[SceneObject], cfg: WorldConfig, rng: np.random.Generator) -> Image.Image:
    """Draw the scene; positions jitter inside their cell so no two images are pixel-identical."""
    img = Image.new("RGB", (cfg.image_size, cfg.image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = cfg.image_size / cfg.grid
    for obj in objects:
        r = cell * (0.44 if obj.size == "large" else 0.28)
        slack = cell / 2 - r - 0.5
        cx = (obj.col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (obj.row + 0.5) * cell + rng.uniform(-slack, slack)
        box = lambda x0, y0, x1, y1: [cx + x0 * r, cy + y0 * r, cx + x1 * r, cy + y1 * r]  # noqa: E731
        fill = COLORS[obj.color]
        if obj.shape == "dome":
            draw.pieslice(box(-1, -0.6, 1, 1.4), 180, 360, fill=fill)
        elif obj.shape in SOLIDS:
            for method, corners, solid in SOLIDS[obj.shape]:
                getattr(draw, method)(box(*corners), fill=fill if solid else BACKGROUND)
        elif obj.shape in GLYPHS:
            for part in GLYPHS[obj.shape]:
                draw.polygon([(cx + x * r, cy + y * r) for x, y in part], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
    return img


# ---------------------------------------------------------------------------------------------
# Questions: (question, answer, answer_type, family, prompt); asked only where the answer is unique


def related_objects(objects, ref: SceneObject, relation: str) -> list[SceneObject]:
    drow, dcol = RELATIONS[relation]
    if drow == 0:
        return [o for o in objects if o.row == ref.row and (o.col - ref.col) * dcol > 0]
    return [o for o in objects if o.col == ref.col and (o.row - ref.row) * drow > 0]


# Each family's phrasings (VQA asks the same thing many ways; here each concept gets one of them) and
# the sentence an answer is slotted into to make its prompt; {s} is the subject, e.g. "small star".
FAMILIES = {
    "color": (("What color is the {s}?", "What is the color of the {s}?", "Which color does the {s} have?",
               "What colour is the {s} in the picture?", "The {s} is what color?", "What color is the {s} shown here?"),
              "the {s} is {{}}."),
    "shape": (("What is the {s} object?", "What kind of object is the {s} one?", "What is the {s} thing in the picture?",
               "What shape is the {s} item?", "Which object is the {s} one?"),
              "the {s} object is a {{}}."),
    "position": (("Where is the {s}?", "Where is the {s} located?", "In which part of the picture is the {s}?",
                  "Where in the image is the {s}?", "Where can you see the {s}?"),
                 "the {s} is at the {{}}."),
    "count": (("How many {s} are there?", "How many {s} are in the picture?", "How many {s} can you see?",
               "How many {s} are shown?", "What is the number of {s}?"),
              "there are {{}} {s}."),
    "line-shape": (("What is the {s}?", "What kind of object is the {s}?", "Which object is the {s}?",
                    "What is the {s} in the picture?", "What shape is the {s}?"),
                   "the {s} is a {{}}."),
    "line-color": (("What color is the {s}?", "What is the color of the {s}?", "Which color does the {s} have?",
                    "What colour is the {s}?", "The {s} is what color?"),
                   "the {s} is {{}}."),
    "relation-color": (("What color is the object {s}?", "What is the color of the thing {s}?",
                        "Which color has the object {s}?", "What colour is the item {s}?"),
                       "the object {s} is {{}}."),
    "relation-shape": (("What shape is the object {s}?", "What is the thing {s}?", "Which object is {s}?",
                        "What kind of object is {s}?"),
                       "the object {s} is a {{}}."),
    "yes-no": (("Is there a {s}?", "Is there a {s} in the picture?"), "{{}}, there is a {s}."),
    "choice": (("Is the {s}?",), "the {s}: {{}}."),
}
# world v3's phrasings where they differ from v2's: every counting question asks "how many", as VQA's do
PHRASINGS_V3 = {"count": ("How many {s} are there?", "How many {s} are in the picture?", "How many {s} can you see?",
                          "How many {s} are shown?", "How many {s} do you see?")}
ANSWER_TYPES = {"count": "number", "yes-no": "yes/no"}
FILTERED_FAMILIES = ("yes-no", "choice")   # asked, as in VQA, and dropped by the Meta-VQA builder's rules
_RELATION_SUBJECT = "(?:" + "|".join(RELATIONS) + ") the .+"


_LINE_SUBJECT = ".+ in the (?:" + "|".join(sorted({line for lines in GRID_LINES.values() for line in lines})) + ")"


def _family_pattern(family: str, phrasing: str) -> str:
    if family.startswith("line-"):
        subject = _LINE_SUBJECT
    else:
        subject = _RELATION_SUBJECT if family.startswith("relation") else ".+"
    return re.escape(phrasing).replace(re.escape("{s}"), f"({subject})")


# The specific forms first: relations and line colours (whose phrasings are the colour family's), then longer
# phrasings ("Is there a {s} in the picture?" before "Is there a {s}?")
_PATTERNS = [(family, re.compile(_family_pattern(family, phrasing)))
             for family, phrasing in sorted({(f, p) for f, (ps, _) in FAMILIES.items() for p in ps + PHRASINGS_V3.get(f, ())},
                                            key=lambda fp: (not fp[0].startswith(("relation", "line-color")),
                                                            -len(fp[1]), fp))]


def parse_question(question: str) -> tuple[str, str] | None:
    """(family, subject) of a Shapes-world question, or None for any other question."""
    for family, pattern in _PATTERNS:
        m = pattern.fullmatch(question)
        if m:
            return family, m[1]
    return None


def question_family(question: str) -> str | None:
    """The family a Shapes-world question was asked from, or None for any other question."""
    parsed = parse_question(question)
    return parsed[0] if parsed else None


def question_label(question: str) -> str:
    """A short label to group questions by in plots: the world's question family, else the first two words."""
    return question_family(question) or " ".join(question.split()[:2])


def scene_questions(objects: list[SceneObject], grid: int, design: int = 2, line_count_attributes: int = 1
                    ) -> list[tuple[str, str, str, str, str]]:
    """Every question this scene answers uniquely, one phrasing per concept:
    (question, answer, VQA answer_type, family, prompt template).

    `design` 2 asks world v2's questions; 3 asks world v3's (calibrated to VQA's question mix): counting
    by up to two attributes or within a row or column, the kind of the one object of a colour in a row or
    column, where a kind or a coloured thing is, and one relation direction per reference and attribute;
    4 (fewer relations, as in VQA) also asks the colour of the one thing of a kind in a row or column (rows or
    columns, one axis per kind, chosen by a hash), and asks relations only of references picked out by colour
    and kind.
    A count within a row or column picks things out by at most `line_count_attributes` of size and colour
    (design 3; 0: only "How many objects are in the top row?")."""
    qs: list[tuple[str, str, str, str, str]] = []

    def ask(family: str, subject: str, answer: str) -> None:
        phrasings, prompt = FAMILIES[family]
        phrasings = PHRASINGS_V3.get(family, phrasings) if design >= 3 else phrasings
        phrasing = phrasings[stable_hash(family, subject) % len(phrasings)]
        qs.append((phrasing.format(s=subject), answer, ANSWER_TYPES.get(family, "other"), family,
                   prompt.format(s=subject)))

    def unique(pred):
        hits = [o for o in objects if pred(o)]
        return hits[0] if len(hits) == 1 else None

    def phrase(*words):
        return " ".join(w for w in words if w)

    def fits(o, size, color, shape) -> bool:
        return (size is None or o.size == size) and (color is None or o.color == color) and (shape is None or o.shape == shape)

    for size in (None, *SIZES):
        # the colour of an object picked out by its kind, and the kind of one picked out by its colour
        for shape in SHAPES:
            o = unique(lambda o: fits(o, size, None, shape))
            if o:
                ask("color", phrase(size, shape), o.color)
        for color in COLORS:
            o = unique(lambda o: fits(o, size, color, None))
            if o:
                ask("shape", phrase(size, color), o.shape)
        if design >= 3:   # the kind of the one object of a colour in a row or column
            for color in COLORS:
                for line in grid_lines(grid):
                    o = unique(lambda o: fits(o, size, color, None) and in_line(o, line, grid))
                    if o:
                        ask("line-shape", phrase(size, color, "object in the", line), o.shape)
        if design >= 4 and size is None:   # the colour of the one thing of a kind in a row or column
            for shape in SHAPES:
                for line in [l for l in grid_lines(grid) if l.endswith(("row", "column")[stable_hash("line-color", shape) % 2])]:
                    o = unique(lambda o: fits(o, size, None, shape) and in_line(o, line, grid))
                    if o:
                        ask("line-color", phrase(size, shape, "in the", line), o.color)

    if design >= 3:   # where a kind or a coloured thing is
        for size, color, shape in [(None, None, s) for s in SHAPES] + [(z, c, None) for z in (None, *SIZES) for c in COLORS]:
            o = unique(lambda o: fits(o, size, color, shape))
            if o:
                ask("position", phrase(size, color, shape or "object"), position_name(o.row, o.col, grid))
    # what is beside a reference, per reference and attribute in directions chosen by a hash: world v2 one per
    # axis (left of / right of, above / below), also asking where a coloured kind is; world v3 one in all
    for color, shape in [(c, s) for c in (None, *COLORS) for s in SHAPES]:
        ref = unique(lambda o: fits(o, None, color, shape))
        if ref is None or (design >= 4 and color is None):
            continue
        if color and design < 3:
            ask("position", phrase(color, shape), position_name(ref.row, ref.col, grid))
        for family in ("relation-color", "relation-shape"):
            relations = ([list(RELATIONS)[stable_hash(family, color, shape) % len(RELATIONS)]] if design >= 3 else
                         [axis[stable_hash(family, color, shape, *axis) % 2]
                          for axis in (("left of", "right of"), ("above", "below"))])
            for relation in relations:
                near = related_objects(objects, ref, relation)
                if len(near) == 1:
                    ask(family, f"{relation} the {phrase(color, shape)}", getattr(near[0], family.split("-")[1]))
    # counting, asked only where at least one object matches (VQA rarely counts absent things); in design 3
    # also by two attributes, and things of at most one attribute within one row or column
    for size, color, shape in COUNT_FILTERS if design >= 3 else COUNT_FILTERS[:1 + len(SIZES) + len(COLORS) + len(SHAPES)]:
        in_lines = design >= 3 and shape is None and (size is not None) + (color is not None) <= line_count_attributes
        for line in (None, *grid_lines(grid)) if in_lines else (None,):
            n = sum(1 for o in objects if fits(o, size, color, shape) and (line is None or in_line(o, line, grid)))
            if n:
                ask("count", phrase(size, color, plural(shape) if shape else "objects", line and f"in the {line}"),
                    str(n))
    # yes/no and either-or questions: VQA has them, and the Meta-VQA builder must drop them
    for shape in SHAPES:
        ask("yes-no", shape, "yes" if any(o.shape == shape for o in objects) else "no")
        o = unique(lambda o: o.shape == shape)
        if o:
            other = sorted(c for c in COLORS if c != o.color)[len(objects) % (len(COLORS) - 1)]
            a, b = sorted([o.color, other])
            ask("choice", f"{shape} {a} or {b}", o.color)
    return qs


class QuestionWeights:
    """How readily each question is asked of an image that answers it.

    A log-normal popularity (some VQA questions are asked thousands of times, most a few dozen),
    divided by the question's availability (the share of `pilot_scenes` scenes of their own seed that
    answer it) to the power `availability_power`: at 0 the common scenes' questions take most of the
    budget; at 1 a question's sample count follows its popularity alone.
    """

    def __init__(self, cfg: WorldConfig, habits: Habits):
        self.cfg = cfg
        self.available: Counter[str] = Counter()
        if cfg.availability_power:
            rng = np.random.default_rng([cfg.seed, 4])
            for _ in range(cfg.pilot_scenes):
                self.available.update(q for q, *_ in scene_questions(sample_scene(rng, cfg, habits), cfg.grid,
                                                                     cfg.question_design, cfg.line_count_attributes))
        self._cache: dict[str, float] = {}

    def __call__(self, question: str) -> float:
        if question not in self._cache:
            cfg = self.cfg
            z = np.random.default_rng([cfg.seed, 3, stable_hash(question)]).standard_normal()
            weight = float(np.exp(cfg.popularity_sigma * z))
            if cfg.availability_power and self.available[question]:   # too rare for the pilot: not boosted
                weight /= (self.available[question] / cfg.pilot_scenes) ** cfg.availability_power
            self._cache[question] = weight
        return self._cache[question]


# ---------------------------------------------------------------------------------------------
# Writing the world in the VQA v2 layout


def generate_world(cfg: WorldConfig, root: Path, images: bool = True) -> dict:
    """Write images, questions, annotations and answer-prompt templates under `root` (VQA v2 layout).

    Each image is asked `questions_per_image` of the questions it answers, drawn without replacement
    in proportion to their popularity; `max_per_question` caps how often one question is asked.
    With `images=False` no scene is drawn: the labels are the same (pixels come from a stream of their
    own), which is all a calibration of label statistics reads. Returns summary statistics.
    """
    root = Path(root)
    rng = np.random.default_rng([cfg.seed, 0])
    habits = world_habits(cfg)
    asked: Counter[str] = Counter()
    weight = QuestionWeights(cfg, habits)
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
            if images:   # pixels from a stream of their own, so no label depends on how scenes are drawn
                render_scene(objects, cfg, np.random.default_rng([cfg.seed, 5, image_id])).save(
                    img_dir / f"{image_name(split, image_id)}.png")
            candidates = [c for c in scene_questions(objects, cfg.grid, cfg.question_design, cfg.line_count_attributes)
                          if asked[c[0]] < (
                cfg.max_per_filtered_question if c[3] in FILTERED_FAMILIES else cfg.max_per_question)]
            if not candidates:
                continue
            # people ask how many where there are several: a count is asked in proportion to n^count_salience
            w = np.array([weight(c[0]) * (int(c[1]) ** cfg.count_salience if c[3] == "count" else 1.0)
                          for c in candidates])
            picked = rng.choice(len(candidates), size=min(cfg.questions_per_image, len(candidates)), replace=False,
                                p=w / w.sum())
            for k, idx in enumerate(sorted(picked)):
                question, answer, answer_type, family, prompt = candidates[idx]
                asked[question] += 1
                families[family] += 1
                templates.setdefault(question, prompt)
                qid = image_id * 1000 + k
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
