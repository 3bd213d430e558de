"""The Shapes world: answers are unique and right, one phrasing per concept, files follow VQA v2, and the
`quick` split lies inside the label-statistics bands measured against the authors' real Meta-VQA split."""
from collections import Counter, defaultdict

import numpy as np
import pytest

import hyperclip_lib.world as world
from hyperclip_lib.config import WORLD_V2, get_config
from hyperclip_lib.metavqa import TaskSplit, build_meta_vqa, find_image
from hyperclip_lib.splitstats import band_misses, minilm_embedder, split_statistics
from hyperclip_lib.world import (COLORS, SHAPES, SIZES, parse_question, position_name, sample_scene, scene_questions,
                                 world_habits)

DIRECTIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}


def singular(word):
    for cut in (0, 1, 2):   # stars -> star, crosses -> cross
        if cut and word[-cut:] in ("s", "es") and word[:-cut] in SHAPES or not cut and word in SHAPES:
            return word[:-cut] if cut else word
    return word


def referents(objects, phrase):
    """An independent reading of a noun phrase such as 'small red stars' or 'large objects'."""
    def ok(o):
        for w in map(singular, phrase.split()):
            if w in SIZES and o.size != w or w in COLORS and o.color != w or w in SHAPES and o.shape != w:
                return False
        return True
    return [o for o in objects if ok(o)]


def in_named_line(o, line, grid):
    which, axis = line.split()
    index = {"top": 0, "left": 0, "middle": grid // 2, "second": 1, "third": 2, "bottom": grid - 1, "right": grid - 1}[which]
    return (o.row if axis == "row" else o.col) == index


def check(objects, question, answer, grid):
    family, subject = parse_question(question)
    if " in the " in subject and family in ("count", "line-shape", "line-color"):   # things in one row or column
        subject, line = subject.split(" in the ")
        objects = [o for o in objects if in_named_line(o, line, grid)]
        if family.startswith("line-"):
            hits = referents(objects, subject)
            assert len(hits) == 1, question
            return getattr(hits[0], family.split("-")[1]) == answer
    if family.startswith("relation"):
        relation = next(r for r in DIRECTIONS if subject.startswith(r + " the "))
        (ref,) = referents(objects, subject[len(relation) + 5:])
        dr, dc = DIRECTIONS[relation]
        near = [o for o in objects if o is not ref and (o.row - ref.row) * dr >= 0 and (o.col - ref.col) * dc >= 0
                and (o.row == ref.row if dr == 0 else o.col == ref.col)]
        assert len(near) == 1, question
        return getattr(near[0], family.split("-")[1]) == answer
    if family in ("color", "shape", "position"):
        hits = referents(objects, subject)
        assert len(hits) == 1, question
        o = hits[0]
        return {"color": o.color, "shape": o.shape, "position": position_name(o.row, o.col, grid)}[family] == answer
    if family == "count":
        return str(len(referents(objects, subject.replace("objects", "")))) == answer
    if family == "yes-no":
        return answer == ("yes" if any(o.shape == subject for o in objects) else "no")
    shape, a, _, b = subject.split()
    (o,) = referents(objects, shape)
    return o.color == answer and answer in (a, b)


GRID_4X4 = {"world.repeat_prob": 0.5, "world.grid": 4, "world.image_size": 80, "world.min_objects": 6,
            "world.max_objects": 13, "world.repeat_color_prob": 0.8}


@pytest.mark.parametrize("design", [WORLD_V2, {"world.question_design": 3, "world.repeat_prob": 0.5, "world.max_objects": 9},
                                    {"world.question_design": 3, **GRID_4X4}, {"world.question_design": 4, **GRID_4X4}],
                         ids=["v2", "v3", "v3-4x4", "design-4"])
def test_every_question_has_a_unique_and_correct_answer_and_each_concept_one_phrasing(design):
    cfg = get_config("quick", design).world
    rng, habits = np.random.default_rng(0), world_habits(cfg)
    phrasings, directions = defaultdict(set), defaultdict(set)
    n = 0
    for _ in range(150):
        objects = sample_scene(rng, cfg, habits)
        cells = [(o.row, o.col) for o in objects]
        assert len(set(cells)) == len(cells) and cfg.min_objects <= len(objects) <= cfg.max_objects
        qs = scene_questions(objects, cfg.grid, cfg.question_design)
        assert len({q for q, *_ in qs}) == len(qs), "a question asked twice of one image"
        for question, answer, answer_type, family, _ in qs:
            assert check(objects, question, answer, cfg.grid), (question, answer, objects)
            assert parse_question(question)[0] == family
            assert answer_type == {"count": "number", "yes-no": "yes/no"}.get(family, "other")
            subject = parse_question(question)[1]
            phrasings[family, subject].add(question)
            if family.startswith("relation"):
                relation = next(r for r in DIRECTIONS if subject.startswith(r + " "))
                axis = "horizontal" if DIRECTIONS[relation][0] == 0 and cfg.question_design < 3 else "any"
                directions[family, subject[len(relation):], axis].add(relation)
            if cfg.grid == 4:
                assert "middle" not in subject, "a 4×4 grid has no middle row or column"
            if family == "count" and cfg.question_design >= 3:
                assert question.lower().startswith("how many"), "world v3 counts as VQA does"
            n += 1
    assert n > 5000
    assert all(len(q) == 1 for q in phrasings.values()), "a concept asked in two phrasings"
    # world v2: one direction per axis; world v3: one direction per reference
    assert all(len(r) == 1 for r in directions.values()), "a reference asked about in two directions"
    assert len({min(q) for q in phrasings.values()}) > 1000


def test_places_on_a_4x4_grid_are_the_outer_rows_and_columns_and_those_between():
    names = [[position_name(r, c, 4) for c in range(4)] for r in range(4)]
    assert names[0] == ["top left", "top", "top", "top right"]
    assert names[1] == names[2] == ["left", "center", "center", "right"]
    assert names[3] == ["bottom left", "bottom", "bottom", "bottom right"]
    assert [[position_name(r, c, 3) for c in range(3)] for r in range(3)] == [
        ["top left", "top", "top right"], ["left", "center", "right"], ["bottom left", "bottom", "bottom right"]]


@pytest.mark.parametrize("color_prob", [0.0, 1.0])
def test_repeated_kinds_share_their_colour_as_often_as_asked(color_prob):
    cfg = get_config("quick", {"world.repeat_prob": 1.0, "world.repeat_color_prob": color_prob,
                               "world.color_concentration": 5.0, "world.min_objects": 6}).world
    rng, habits = np.random.default_rng(0), world_habits(cfg)
    scenes = [sample_scene(rng, cfg, habits) for _ in range(50)]
    assert all(len({o.shape for o in s}) == 1 for s in scenes)
    one_colour = np.mean([len({o.color for o in s}) == 1 for s in scenes])
    assert one_colour == (1.0 if color_prob else 0.0)


def test_answer_prompts_restate_the_question_around_one_answer_slot():
    cfg = get_config("quick").world
    rng, habits = np.random.default_rng(1), world_habits(cfg)
    prompts = {}
    for _ in range(300):
        for question, answer, _, family, prompt in scene_questions(sample_scene(rng, cfg, habits), cfg.grid):
            prompts[question] = prompt
            filler = {"the", "is", "a", "at", "there", "are", "object", "{}", "{}.", "{},", ""}
            words = {w.strip(".?,:").lower() for w in question.split()}
            prompt_words = {w.strip(".?,:") for w in prompt.lower().split()}
            assert prompt.count("{}") == 1 and prompt_words - filler <= words, (question, prompt)
    counting = [q for q in prompts if parse_question(q) == ("count", "objects")]
    assert len(counting) == 1 and prompts[counting[0]] == "there are {} objects."


def test_rare_questions_are_asked_more_readily_than_common_ones():
    cfg = get_config("quick", {"world.pilot_scenes": 300}).world
    weight = world.QuestionWeights(cfg, world_habits(cfg))
    flat = world.QuestionWeights(get_config("quick", {"world.availability_power": 0.0, "world.pilot_scenes": 300}).world,
                                 world_habits(cfg))
    common, rare = (q for q, _ in (weight.available.most_common()[0], weight.available.most_common()[-1]))
    # popularity ÷ availability: the ratio of weights is the popularity ratio times the inverse availability ratio
    ratio = (weight(rare) / weight(common)) / (flat(rare) / flat(common))
    assert ratio == pytest.approx(weight.available[common] / weight.available[rare])
    assert not flat.available and flat(common) == weight(common) * weight.available[common] / cfg.pilot_scenes


@pytest.fixture(scope="module")
def quick_split(tmp_path_factory):
    """The `quick` world's Meta-VQA split. Its labels do not depend on pixels (test_same_seed_same_world checks
    that), so the scenes are not drawn here."""
    root = tmp_path_factory.mktemp("world")
    world.generate_world(get_config("quick").world, root, images=False)
    return TaskSplit.from_meta(*build_meta_vqa(root))


def test_quick_split_lies_inside_the_bands_measured_on_real_meta_vqa(quick_split):
    """The bands of docs/world-v2-calibration.md (splitstats.LABEL_BANDS), which the authors' split itself
    satisfies (test_splitstats)."""
    assert not band_misses(split_statistics(quick_split, minilm_embedder()))
    test_questions = {t.question for t in quick_split.test}
    assert not test_questions & {t.question for t in quick_split.train}
    # yes/no and either-or questions are in the files, and the builder drops them
    assert not any(q.startswith("Is ") for q in test_questions | {t.question for t in quick_split.train})


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    cfg = get_config("ci").world
    small = cfg.__class__(**{**cfg.__dict__, "n_images": 40})
    a, b = world.generate_world(small, tmp_path / "a"), world.generate_world(small, tmp_path / "b")
    files = ["Questions/v2_OpenEnded_mscoco_train2014_questions.json", "Annotations/v2_mscoco_val2014_annotations.json",
             "Images/mscoco/train2014/COCO_train2014_000000000003.png"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert find_image(tmp_path / "a", "COCO_val2014_000000000040").suffix == ".png"
    world.generate_world(small, tmp_path / "blank", images=False)   # no label depends on how scenes are drawn
    assert not list((tmp_path / "blank").rglob("*.png"))
    for f in files[:2]:
        assert (tmp_path / "blank" / f).read_bytes() == (tmp_path / "a" / f).read_bytes()
    other = small.__class__(**{**small.__dict__, "seed": 1})
    world.generate_world(other, tmp_path / "c")
    assert (tmp_path / "c" / files[0]).read_bytes() != (tmp_path / "a" / files[0]).read_bytes()
    assert a == b and Counter(a["by_family"]) == Counter(b["by_family"])


def test_line_count_attributes_bounds_what_a_count_within_a_row_or_column_filters_on():
    cfg = get_config("ci", {"world.question_design": 3, "world.repeat_prob": 0.5, "world.grid": 4,
                            "world.image_size": 80, "world.min_objects": 6, "world.max_objects": 13}).world
    rng, habits = np.random.default_rng(0), world_habits(cfg)
    scenes = [sample_scene(rng, cfg, habits) for _ in range(30)]

    def line_counts(attributes):
        return {q for objects in scenes for q, _, _, family, _ in scene_questions(objects, cfg.grid, 3, attributes)
                if family == "count" and parse_question(q)[1].endswith(("row", "column"))}

    def filters(question):
        return set(question.split()) & (set(COLORS) | set(SIZES))

    plain, with_one = line_counts(0), line_counts(1)
    assert plain and all(not filters(q) and "objects" in q for q in plain)
    assert plain < with_one and any(len(filters(q)) == 1 for q in with_one)
    assert all(len(filters(q)) <= 1 for q in with_one)


def test_design_4_asks_relations_only_of_coloured_kinds_and_line_colours_along_one_axis_per_kind():
    cfg = get_config("ci", {"world.question_design": 4, **GRID_4X4}).world
    rng, habits = np.random.default_rng(0), world_habits(cfg)
    scenes = [sample_scene(rng, cfg, habits) for _ in range(200)]
    asked = {design: [(family, parse_question(q)[1]) for objects in scenes
                      for q, _, _, family, _ in scene_questions(objects, cfg.grid, design)] for design in (3, 4)}
    relations = {design: [(f, s) for f, s in asked[design] if f.startswith("relation")] for design in (3, 4)}
    coloured = [(f, s) for f, s in relations[3] if s.split(" the ", 1)[1].split()[0] in COLORS]
    assert 0 < len(coloured) < len(relations[3]) and sorted(relations[4]) == sorted(coloured)
    line_colors = [s for f, s in asked[4] if f == "line-color"]
    assert line_colors and not any(f == "line-color" for f, _ in asked[3])
    axes = defaultdict(set)
    for subject in line_colors:
        kind, line = subject.split(" in the ")
        assert kind in SHAPES, "a line colour is asked of a kind, by nothing else"
        axes[kind].add(line.split()[1])
    assert all(len(a) == 1 for a in axes.values()) and len({a for (a,) in axes.values()}) == 2
    # design 4 only adds questions to design 3's other families
    others = {design: {(f, s) for f, s in asked[design] if not f.startswith(("relation", "line-color"))} for design in (3, 4)}
    assert others[3] == others[4]
