"""Every rule of the Meta-VQA builder, on hand-made VQA v2 files, and every bad-input case."""
import json
import os
import random
from pathlib import Path

import pytest

from hyperclip_lib.cli import main as cli
from hyperclip_lib.metavqa import (MetaVQAError, TaskSplit, build_meta_vqa, load_meta_vqa, statistics_table,
                                   write_meta_vqa)


class VQA:
    """Builds a tiny VQA v2 folder: add(split, question, image_id, answer, answer_type)."""

    def __init__(self):
        self.records = {"train2014": [], "val2014": []}
        self.next_qid = 1

    def add(self, split, question, image_id, answer, answer_type="other"):
        self.records[split].append((self.next_qid, question, image_id, answer, answer_type))
        self.next_qid += 1

    def many(self, split, question, answer, image_ids, answer_type="other"):
        for i in image_ids:
            self.add(split, question, i, answer, answer_type)

    def write(self, root: Path, images: bool = False) -> Path:
        for split, recs in self.records.items():
            (root / "Questions").mkdir(parents=True, exist_ok=True)
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            qs = [{"image_id": i, "question": q, "question_id": qid} for qid, q, i, a, t in recs]
            anns = [{"question_id": qid, "image_id": i, "answer_type": t, "multiple_choice_answer": a,
                     "answers": [{"answer": "decoy", "answer_id": 1}]} for qid, q, i, a, t in recs]
            (root / "Questions" / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps({"questions": qs}))
            (root / "Annotations" / f"v2_mscoco_{split}_annotations.json").write_text(
                json.dumps({"annotations": anns}))
            if images:
                d = root / "Images" / "mscoco" / split
                d.mkdir(parents=True, exist_ok=True)
                for _, _, i, _, _ in recs:
                    (d / f"COCO_{split}_{i:012d}.jpg").write_bytes(b"")
        return root


def name(split, i):
    return f"COCO_{split}_{i:012d}"


def expected_split(images_by_answer: dict, seed=2021):
    train, test = [], []
    for answer, imgs in images_by_answer.items():
        shuffled = imgs.copy()
        random.Random(seed).shuffle(shuffled)
        cut = round(len(imgs) * 0.7)
        train += [[i, answer] for i in shuffled[:cut]]
        test += [[i, answer] for i in shuffled[cut:]]
    return {"train": train, "test": test, "answers": list(images_by_answer)}


def all_tasks(root):
    tr, te = build_meta_vqa(root)
    return {**tr, **te}


def test_a_task_groups_images_by_answer_and_splits_each_answer_70_30(tmp_path):
    v = VQA()
    v.many("train2014", "What color is the bus?", "red", range(1, 12))      # 11 images
    v.many("train2014", "What color is the bus?", "blue", range(20, 27))    # 7 images
    v.many("val2014", "What color is the bus?", "red", range(100, 106))     # 6 more, in val
    tasks = all_tasks(v.write(tmp_path))
    red = [name("train2014", i) for i in range(1, 12)] + [name("val2014", i) for i in range(100, 106)]
    blue = [name("train2014", i) for i in range(20, 27)]
    assert tasks == {"What color is the bus?": expected_split({"red": red, "blue": blue})}
    t = tasks["What color is the bus?"]
    assert len(t["train"]) == round(17 * 0.7) + round(7 * 0.7) and len(t["test"]) == 17 + 7 - len(t["train"])


def test_filters_answer_types_choice_questions_counts_and_single_answers(tmp_path):
    v = VQA()
    v.many("train2014", "Is this a bus?", "yes", range(1, 30), answer_type="yes/no")
    v.many("train2014", "Is this a bus?", "no", range(30, 60), answer_type="yes/no")
    v.many("train2014", "Is the bus red or blue?", "red", range(1, 15))
    v.many("train2014", "Is the bus red or blue?", "blue", range(15, 30))
    v.many("train2014", "What color is the door?", "red", range(1, 15))     # 'or' inside a word is fine
    v.many("train2014", "What color is the door?", "blue", range(15, 30))
    v.many("train2014", "How many cats?", "2", range(1, 15), answer_type="number")
    v.many("train2014", "How many cats?", "3", range(15, 30), answer_type="number")
    v.many("train2014", "What is this?", "dog", range(1, 40))              # a single answer: dropped
    v.many("train2014", "What is that?", "dog", range(1, 40))
    v.add("train2014", "What is that?", 99, "cat")                        # singleton answer: removed, not counted
    tasks = all_tasks(v.write(tmp_path))
    assert set(tasks) == {"What color is the door?", "How many cats?"}


def test_a_task_needs_more_than_20_samples_after_singletons_are_dropped(tmp_path):
    v = VQA()
    v.many("train2014", "Q twenty?", "a", range(1, 11))
    v.many("train2014", "Q twenty?", "b", range(11, 21))      # 20 samples: dropped
    v.add("train2014", "Q twenty?", 50, "c")                  # a singleton does not lift it to 21
    v.many("train2014", "Q twentyone?", "a", range(1, 11))
    v.many("train2014", "Q twentyone?", "b", range(11, 22))   # 21 samples: kept
    tasks = all_tasks(v.write(tmp_path))
    assert set(tasks) == {"Q twentyone?"}
    assert tasks["Q twentyone?"]["answers"] == ["a", "b"]


def test_an_image_counts_once_per_question_and_its_first_answer_wins(tmp_path):
    v = VQA()
    v.many("train2014", "What is it?", "a", range(1, 13))
    v.many("train2014", "What is it?", "b", range(13, 25))
    v.add("train2014", "What is it?", 1, "b")       # image 1 again, other answer: ignored
    v.add("train2014", "What is it?", 13, "b")      # image 13 again: ignored
    v.add("val2014", "What is it?", 1, "b")         # same id in val is another image: counted
    tasks = all_tasks(v.write(tmp_path))
    t = tasks["What is it?"]
    samples = t["train"] + t["test"]
    assert len(samples) == 25
    assert [name("train2014", 1), "a"] in samples and [name("val2014", 1), "b"] in samples
    assert len({s[0] for s in samples}) == 25


def test_label_is_the_multiple_choice_answer_and_questions_are_exact_strings(tmp_path):
    v = VQA()
    for q in ("What is it?", "what is it?"):
        v.many("train2014", q, "a", range(1, 13))
        v.many("train2014", q, "b", range(13, 25))
    tasks = all_tasks(v.write(tmp_path))
    assert set(tasks) == {"What is it?", "what is it?"}
    assert all(a != "decoy" for t in tasks.values() for _, a in t["train"] + t["test"])


def test_meta_split_shuffles_kept_questions_in_insertion_order_70_30_and_writes_authors_json(tmp_path):
    v = VQA()
    questions = [f"Question number {k}?" for k in range(10)]
    for k, q in enumerate(questions):
        split = "val2014" if k % 3 == 0 else "train2014"   # val-only questions come after train ones
        v.many(split, q, "a", range(1, 12))
        v.many(split, q, "b", range(12, 23))
    meta_train, meta_test = build_meta_vqa(v.write(tmp_path / "vqa"))
    order = [q for k, q in enumerate(questions) if k % 3] + [q for k, q in enumerate(questions) if not k % 3]
    random.Random(2021).shuffle(order)
    assert list(meta_train) == order[:7] and list(meta_test) == order[7:]
    out = tmp_path / "out"
    write_meta_vqa(meta_train, meta_test, out)
    assert (out / "meta_train.json").read_text() == json.dumps(meta_train)   # json.dump defaults, as the authors
    assert load_meta_vqa(out) == (meta_train, meta_test)
    stats = statistics_table(TaskSplit.from_meta(meta_train, meta_test))
    assert stats["tasks"] == 10 and stats["answers per task (mean)"] == 2
    assert stats["support size (mean)"] == 2 * round(11 * 0.7)


def _good(tmp_path, images=False):
    v = VQA()
    v.many("train2014", "What is it?", "a", range(1, 13))
    v.many("train2014", "What is it?", "b", range(13, 25))
    return v.write(tmp_path / "vqa", images=images)


def _run_cli(root, out, *extra):
    return cli(["build-metavqa", "--vqa-root", str(root), "--out", str(out), *extra])


def test_cli_writes_both_files(tmp_path, capsys):
    root = _good(tmp_path, images=True)
    assert _run_cli(root, tmp_path / "out", "--check-images") == 0
    assert json.loads((tmp_path / "out" / "meta_train.json").read_text()) | \
        json.loads((tmp_path / "out" / "meta_test.json").read_text()) == all_tasks(root)


@pytest.mark.parametrize("breakage, message", [
    ("malformed", "malformed JSON"),
    ("question_without_annotation", "question_id 999"),
    ("annotation_without_question", "question_id 998"),
    ("missing_field", "lacks the field 'multiple_choice_answer'"),
    ("missing_image", "COCO_train2014_000000000007"),
])
def test_bad_input_names_file_and_record_and_leaves_no_output(tmp_path, capsys, breakage, message):
    root = _good(tmp_path, images=True)
    qfile = root / "Questions" / "v2_OpenEnded_mscoco_train2014_questions.json"
    afile = root / "Annotations" / "v2_mscoco_train2014_annotations.json"
    expected_file = {"malformed": afile, "question_without_annotation": qfile,
                     "annotation_without_question": afile, "missing_field": afile, "missing_image": "Images"}[breakage]
    if breakage == "malformed":
        afile.write_text(afile.read_text()[:-20])
    elif breakage == "question_without_annotation":
        q = json.loads(qfile.read_text())
        q["questions"].append({"image_id": 1, "question": "Orphan?", "question_id": 999})
        qfile.write_text(json.dumps(q))
    elif breakage == "annotation_without_question":
        a = json.loads(afile.read_text())
        a["annotations"].append({"question_id": 998, "image_id": 1, "answer_type": "other",
                                 "multiple_choice_answer": "x"})
        afile.write_text(json.dumps(a))
    elif breakage == "missing_field":
        a = json.loads(afile.read_text())
        del a["annotations"][3]["multiple_choice_answer"]
        afile.write_text(json.dumps(a))
    elif breakage == "missing_image":
        (root / "Images" / "mscoco" / "train2014" / "COCO_train2014_000000000007.jpg").unlink()
    out = tmp_path / "out"
    assert _run_cli(root, out, "--check-images") == 2
    err = capsys.readouterr().err
    assert message in err and str(expected_file) in err
    assert not out.exists() or not any(out.iterdir())


def test_images_are_not_needed_without_check_images(tmp_path):
    root = _good(tmp_path, images=False)
    assert _run_cli(root, tmp_path / "out") == 0


def test_missing_files_and_bad_released_files_are_reported(tmp_path):
    with pytest.raises(MetaVQAError, match="file not found"):
        build_meta_vqa(tmp_path)
    (tmp_path / "meta_train.json").write_text(json.dumps({"Q?": {"train": [["img", "zzz"]], "test": [["i2", "a"]],
                                                                  "answers": ["a"]}}))
    (tmp_path / "meta_test.json").write_text("{}")
    with pytest.raises(MetaVQAError, match=r"meta_train.json: task 'Q\?' has a sample"):
        load_meta_vqa(tmp_path)


def test_the_world_goes_through_the_same_builder_from_the_command_line(tmp_path, capsys):
    world = tmp_path / "world"
    assert cli(["build-world", "--out", str(world), "--profile", "ci", "--set", "world.n_images=120",
                "--set", "world.max_per_question=200"]) == 0
    assert _run_cli(world, tmp_path / "meta", "--check-images") == 0
    meta_train, meta_test = load_meta_vqa(tmp_path / "meta")
    assert meta_train and meta_test and not set(meta_train) & set(meta_test)
    assert cli(["build-world", "--out", str(world), "--set", "world.nope=1"]) == 2
    assert "unknown config key 'world.nope'" in capsys.readouterr().err


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("breakage, message", [
    ("null_question", "has question None; expected a string"),
    ("int_question", "has question 7; expected a string"),
    ("list_question_id", "has question_id [3]; expected an integer"),
    ("int_answer", "has multiple_choice_answer 2; expected a string"),
    ("duplicate_id", "repeats question_id 5"),
    ("id_in_train_and_val", "question_id 1 is also in"),
    ("not_utf8", "not UTF-8"),
    ("directory", "cannot be read"),
    ("nothing_kept", "keep 0 question(s)"),
])
def test_more_bad_input_is_named_and_leaves_no_output(tmp_path, capsys, breakage, message):
    root = _good(tmp_path)
    qfile = root / "Questions" / "v2_OpenEnded_mscoco_train2014_questions.json"
    afile = root / "Annotations" / "v2_mscoco_train2014_annotations.json"
    vfile = root / "Annotations" / "v2_mscoco_val2014_annotations.json"
    if breakage == "null_question":
        _edit(qfile, lambda d: d["questions"][2].update(question=None))
    elif breakage == "int_question":
        _edit(qfile, lambda d: d["questions"][2].update(question=7))
    elif breakage == "list_question_id":
        _edit(qfile, lambda d: d["questions"][2].update(question_id=[3]))
    elif breakage == "int_answer":
        _edit(afile, lambda d: d["annotations"][0].update(multiple_choice_answer=2))
    elif breakage == "duplicate_id":
        _edit(qfile, lambda d: d["questions"][5].update(question_id=5))   # #4 holds id 5 already
    elif breakage == "id_in_train_and_val":
        v = VQA()
        v.add("val2014", "What is it?", 99, "a")   # question id 1, as the first train question
        v.write(tmp_path / "val")
        for kind in ("Questions/v2_OpenEnded_mscoco_val2014_questions.json", "Annotations/v2_mscoco_val2014_annotations.json"):
            (root / kind).write_text((tmp_path / "val" / kind).read_text())
    elif breakage == "not_utf8":
        afile.write_bytes(b'{"annotations": ["\xff"]}')
    elif breakage == "directory":
        afile.unlink()
        afile.mkdir()
    elif breakage == "nothing_kept":
        _edit(afile, lambda d: [a.update(answer_type="yes/no") for a in d["annotations"]])
    out = tmp_path / "out"
    assert _run_cli(root, out) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    named = {"null_question": qfile, "int_question": qfile, "list_question_id": qfile, "int_answer": afile,
             "duplicate_id": qfile, "id_in_train_and_val": vfile, "not_utf8": afile, "directory": afile,
             "nothing_kept": root}[breakage]
    assert str(named) in err, err
    assert not out.exists() or not any(out.iterdir())


def test_an_out_path_that_is_a_file_is_named_and_outputs_get_normal_permissions(tmp_path, capsys):
    root = _good(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert _run_cli(root, blocker / "meta") == 2
    assert "cannot write meta_train.json" in capsys.readouterr().err
    assert _run_cli(root, tmp_path / "out") == 0
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out" / "meta_train.json").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("breakage, message", [
    ("empty_task", "lacks a non-empty list under 'train'"),
    ("empty_query", "lacks a non-empty list under 'test'"),
    ("image_not_a_string", "with a string image name"),
    ("leak", "are meta-train tasks too"),
    ("empty_split", "expected a non-empty object"),
])
def test_a_broken_released_split_is_named(tmp_path, breakage, message):
    v = VQA()
    for k, question in enumerate(["What is it?", "What color is it?", "What shape is it?", "How many?"]):
        v.many("train2014", question, "a", range(100 * k + 1, 100 * k + 13))
        v.many("train2014", question, "b", range(100 * k + 13, 100 * k + 25))
    meta_train, meta_test = build_meta_vqa(v.write(tmp_path / "vqa"))
    load_meta_vqa(write_meta_vqa(meta_train, meta_test, tmp_path / "good")[0].parent)   # intact: loads
    question, task = next(iter(meta_test.items()))
    if breakage == "empty_task":
        task["train"] = []
    elif breakage == "empty_query":
        task["test"] = []
    elif breakage == "image_not_a_string":
        task["train"][0][0] = 17
    elif breakage == "leak":
        meta_train[question] = task
    elif breakage == "empty_split":
        meta_test = {}
    folder = tmp_path / "meta"
    folder.mkdir()
    (folder / "meta_train.json").write_text(json.dumps(meta_train))
    (folder / "meta_test.json").write_text(json.dumps(meta_test))
    with pytest.raises(MetaVQAError, match=message):
        load_meta_vqa(folder)
