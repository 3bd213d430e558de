"""The Shapes world: answers are unique and right, files follow VQA v2, test questions reuse train words."""
import re
from collections import Counter

import numpy as np
import pytest

from hyperclip_lib.config import get_config
from hyperclip_lib.metavqa import TaskSplit, build_meta_vqa, find_image, statistics_table
from hyperclip_lib.world import (COLORS, SHAPES, SIZES, question_family, world_habits, generate_world,
                                 position_name, sample_scene, scene_questions)


def referents(objects, phrase, grid):
    """An independent reading of a noun phrase such as 'large red circle on the left'."""
    words = phrase.split()
    loc = None
    for suffix, test in (("on the left", lambda o: o.col == 0), ("on the right", lambda o: o.col == grid - 1),
                         ("at the top", lambda o: o.row == 0), ("at the bottom", lambda o: o.row == grid - 1)):
        if phrase.endswith(suffix):
            loc, words = test, phrase[: -len(suffix)].split()
    def ok(o):
        for w in words:
            if w in SIZES and o.size != w or w in COLORS and o.color != w or w in SHAPES and o.shape != w:
                return False
        return loc is None or loc(o)
    return [o for o in objects if ok(o)]


PARAPHRASES = [(r"What is the color of the (.+)\?", r"What color is the \1?"),
               (r"Which color does the (.+) have\?", r"What color is the \1?"),
               (r"What is the shape of the (.+)\?", r"What shape is the \1?"),
               (r"Which shape is the (.+)\?", r"What shape is the \1?"),
               (r"Where is the (.+) located\?", r"Where is the \1?"),
               (r"How many (.+) are in the picture\?", r"How many \1 are there?")]


def check(objects, question, answer, grid):
    for pattern, canonical in PARAPHRASES:
        question = re.sub(f"^{pattern}$", canonical, question)
    m = re.fullmatch(r"What (color|shape) is the object (left of|right of|above|below) the (.+)\?", question)
    if m:
        (ref,) = referents(objects, m[3], grid)
        dr, dc = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}[m[2]]
        near = [o for o in objects if (o.row - ref.row) * dr >= 0 and (o.col - ref.col) * dc >= 0 and o is not ref
                and (o.row == ref.row if dr == 0 else o.col == ref.col)]
        assert len(near) == 1
        return getattr(near[0], m[1]) == answer
    m = re.fullmatch(r"What (color|shape|size) is the (.+)\?", question)
    if m:
        hits = referents(objects, m[2].replace(" object", ""), grid)
        assert len(hits) == 1, question
        return getattr(hits[0], m[1]) == answer
    m = re.fullmatch(r"Where is the (.+)\?", question)
    if m:
        (o,) = referents(objects, m[1], grid)
        return position_name(o.row, o.col, grid) == answer
    m = re.fullmatch(r"How many (.+) are there\?", question)
    if m:
        singular = {"circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star",
                    "crosses": "cross", "diamonds": "diamond", "objects": ""}
        phrase = " ".join(singular.get(w, w) for w in m[1].split()).strip()
        return str(len(referents(objects, phrase, grid))) == answer
    m = re.fullmatch(r"Is there a (\w+)\?", question)
    if m:
        return answer == ("yes" if any(o.shape == m[1] for o in objects) else "no")
    m = re.fullmatch(r"Is the (\w+) (\w+) or (\w+)\?", question)
    assert m, f"unexpected question form {question!r}"
    (o,) = referents(objects, m[1], 3)
    return o.color == answer and answer in (m[2], m[3])


def test_every_question_has_a_unique_and_correct_answer():
    cfg = get_config("quick").world
    rng, habits = np.random.default_rng(0), world_habits(cfg)
    n = 0
    for _ in range(150):
        objects = sample_scene(rng, cfg, habits)
        cells = [(o.row, o.col) for o in objects]
        assert len(set(cells)) == len(cells) and cfg.min_objects <= len(objects) <= cfg.max_objects
        qs = scene_questions(objects, cfg.grid)
        assert len({q for q, *_ in qs}) == len(qs), "a question asked twice of one image"
        for question, answer, answer_type, family, _ in qs:
            assert check(objects, question, answer, cfg.grid), (question, answer, objects)
            assert question_family(question) == family
            assert answer_type == {"count": "number", "yes-no": "yes/no"}.get(family, "other")
            n += 1
    assert n > 5000


def test_answer_prompts_restate_the_question_around_one_answer_slot():
    cfg = get_config("quick").world
    rng, habits = np.random.default_rng(1), world_habits(cfg)
    prompts = {}
    for _ in range(300):
        for question, answer, _, family, prompt in scene_questions(sample_scene(rng, cfg, habits), cfg.grid):
            prompts[question] = prompt
            filler = {"the", "is", "a", "at", "there", "are", "object", "{}", "{}.", "{},", "color", "shape"}
            words = {w.strip(".?,:").lower() for w in question.split()}
            prompt_words = {w.strip(".?,:") for w in prompt.lower().split()}
            assert prompt.count("{}") == 1 and prompt_words - filler - {""} <= words, (question, prompt)
    assert prompts["What is the color of the star on the left?"] == "the star on the left is {}."
    assert prompts["How many objects are in the picture?"] == "there are {} objects."
    assert prompts["What shape is the object left of the cross?"] == "the object left of the cross is a {}."


@pytest.fixture(scope="module")
def quick_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_world(get_config("quick").world, root)
    return root


def test_quick_world_is_sized_like_meta_vqa_and_held_out_questions_reuse_training_words(quick_world):
    split = TaskSplit.from_meta(*build_meta_vqa(quick_world))
    stats = statistics_table(split)
    assert stats["tasks"] >= 800
    assert stats["answers per task (mean)"] >= 4
    assert stats["samples per task (median)"] >= 30
    train_words = {w for t in split.train for w in t.question.split()}
    test_questions = {t.question for t in split.test}
    assert not test_questions & {t.question for t in split.train}
    assert all(set(q.split()) <= train_words for q in test_questions)
    # yes/no and either-or questions are in the files, and the builder drops them
    assert not any(q.startswith("Is ") for q in test_questions | {t.question for t in split.train})
    for img, _ in split.test[0].query:
        assert find_image(quick_world, img).suffix == ".png"


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    cfg = get_config("ci").world
    small = cfg.__class__(**{**cfg.__dict__, "n_images": 40})
    a, b = generate_world(small, tmp_path / "a"), generate_world(small, tmp_path / "b")
    files = ["Questions/v2_OpenEnded_mscoco_train2014_questions.json", "Annotations/v2_mscoco_val2014_annotations.json",
             "Images/mscoco/train2014/COCO_train2014_000000000003.png"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    other = small.__class__(**{**small.__dict__, "seed": 1})
    generate_world(other, tmp_path / "c")
    assert (tmp_path / "c" / files[0]).read_bytes() != (tmp_path / "a" / files[0]).read_bytes()
    assert a == b and Counter(a["by_family"]) == Counter(b["by_family"])
