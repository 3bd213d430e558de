"""Meta-VQA: VQA v2 question/annotation files -> meta-learning tasks (paper §6.1, A.4).

One code path for the real VQA v2 and for the Shapes world. `build_meta_vqa` reproduces the
authors' release script rule for rule, so for the same input files `write_meta_vqa` writes
byte-identical `meta_train.json` / `meta_test.json`; `load_meta_vqa` reads the authors'
released files directly.
"""
from __future__ import annotations

import json
import os
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from .store import atomic_write_bytes

SPLITS = ("train2014", "val2014")
KEPT_ANSWER_TYPES = ("number", "other")
MIN_SAMPLES_EXCLUSIVE = 20   # a task needs more than 20 samples ...
MIN_ANSWERS_EXCLUSIVE = 1    # ... and more than one answer
SUPPORT_FRACTION = 0.7
META_TRAIN_FRACTION = 0.7
AUTHORS_SEED = 2021


class MetaVQAError(ValueError):
    """Bad Meta-VQA input; the message names the file and the offending record."""


def question_file(root: os.PathLike, split: str) -> Path:
    return Path(root) / "Questions" / f"v2_OpenEnded_mscoco_{split}_questions.json"


def annotation_file(root: os.PathLike, split: str) -> Path:
    return Path(root) / "Annotations" / f"v2_mscoco_{split}_annotations.json"


def prompt_file(root: os.PathLike) -> Path:
    """Per-question answer-prompt templates (the authors' `prompt_meta.json`; the world writes one)."""
    return Path(root) / "Annotations" / "prompt_meta.json"


def image_dir(root: os.PathLike, split: str) -> Path:
    return Path(root) / "Images" / "mscoco" / split


def read_json(path: Path):
    """A JSON file's content; a MetaVQAError naming the file when it is missing, unreadable or not JSON."""
    if not path.exists():
        raise MetaVQAError(f"{path}: file not found (expected the VQA v2 layout under the root folder)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MetaVQAError(f"{path}: malformed JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise MetaVQAError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:   # a directory, no permission, ...
        raise MetaVQAError(f"{path}: cannot be read ({e.strerror or e})") from None


def _load_json(path: Path, list_key: str) -> list:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        raise MetaVQAError(f"{path}: expected a JSON object with a list under {list_key!r}")
    return data[list_key]


FIELD_TYPES = {"question_id": int, "image_id": int, "question": str, "answer_type": str, "multiple_choice_answer": str}


def _check_fields(path: Path, records: list, fields: tuple[str, ...], what: str) -> None:
    """Every record an object with `fields` of the VQA v2 types, and no question id twice in one file."""
    seen: set[int] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise MetaVQAError(f"{path}: {what} #{i} is not a JSON object: {rec!r}")
        qid = rec.get("question_id", "?")
        for name in fields:
            if name not in rec:
                raise MetaVQAError(f"{path}: {what} #{i} (question_id {qid}) lacks the field {name!r}")
            kind = FIELD_TYPES[name]
            if not isinstance(rec[name], kind) or isinstance(rec[name], bool):
                raise MetaVQAError(f"{path}: {what} #{i} (question_id {qid!r}) has {name} {rec[name]!r}; "
                                   f"expected {'an integer' if kind is int else 'a string'}")
        if qid in seen:
            raise MetaVQAError(f"{path}: {what} #{i} repeats question_id {qid}")
        seen.add(qid)


def read_vqa_split(root: os.PathLike, split: str) -> tuple[dict[int, dict], dict[int, str]]:
    """(annotations by question id in annotation-file order, question strings by question id)."""
    qpath, apath = question_file(root, split), annotation_file(root, split)
    questions = _load_json(qpath, "questions")
    annotations = _load_json(apath, "annotations")
    _check_fields(qpath, questions, ("question_id", "image_id", "question"), "question")
    _check_fields(apath, annotations, ("question_id", "image_id", "answer_type", "multiple_choice_answer"),
                  "annotation")
    qa: dict[int, dict] = {}
    for ann in annotations:
        qa[ann["question_id"]] = ann
    text = {q["question_id"]: q["question"] for q in questions}
    for qid in text:
        if qid not in qa:
            raise MetaVQAError(f"{qpath}: question_id {qid} ({text[qid]!r}) has no annotation in {apath}")
    for qid in qa:
        if qid not in text:
            raise MetaVQAError(f"{apath}: annotation for question_id {qid} has no question in {qpath}")
    return qa, text


def image_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{str(image_id).zfill(12)}"


def find_image(root: os.PathLike, name: str) -> Path | None:
    """The image file for a COCO-style name: `.jpg` as COCO, or `.png` as the Shapes world writes."""
    split = name.split("_")[1]
    for ext in (".jpg", ".png"):
        p = image_dir(root, split) / f"{name}{ext}"
        if p.exists():
            return p
    return None


def build_meta_vqa(root: os.PathLike, seed: int = AUTHORS_SEED, check_images: bool = False
                   ) -> tuple[dict, dict]:
    """(meta_train, meta_test), each {question: {"train": [[image, answer]...], "test": [...], "answers": [...]}}.

    The authors' rules, in their order: train then val; keep answer types number/other; group by
    the exact question string; label = multiple_choice_answer; an image counts once per question
    (first occurrence wins); drop answers with a single image; keep a question with > 20 samples,
    > 1 answer and no word "or"; per answer a fresh random.Random(seed) shuffle and a 70/30
    support/query split; a fresh random.Random(seed) shuffle of the kept questions, 70/30 into
    meta-train/meta-test.
    """
    per_split = {split: read_vqa_split(root, split) for split in SPLITS}
    train_qa = per_split["train2014"][0]
    shared = sorted(train_qa.keys() & per_split["val2014"][0].keys())
    if shared:
        raise MetaVQAError(f"{annotation_file(root, 'val2014')}: question_id {shared[0]} is also in "
                           f"{annotation_file(root, 'train2014')} ({len(shared)} shared ids); VQA v2's ids are unique")
    merged_qa = {**train_qa, **per_split["val2014"][0]}   # as the authors: val wins on a shared id

    ids_by_question: dict[str, list[int]] = {}
    for split in SPLITS:
        qa, text = per_split[split]
        for qid, ann in qa.items():
            if ann["answer_type"] in KEPT_ANSWER_TYPES:
                ids_by_question.setdefault(text[qid], []).append(qid)

    kept: dict[str, dict[str, list]] = {}
    for question, ids in ids_by_question.items():
        images_by_answer: dict[str, list[str]] = {}
        seen: set[str] = set()
        for qid in ids:
            ann = merged_qa[qid]
            name = image_name("train2014" if qid in train_qa else "val2014", ann["image_id"])
            if name in seen:
                continue
            seen.add(name)
            images_by_answer.setdefault(ann["multiple_choice_answer"], []).append(name)
        images_by_answer = {a: imgs for a, imgs in images_by_answer.items() if len(imgs) > 1}
        n_samples = sum(len(imgs) for imgs in images_by_answer.values())
        if (n_samples > MIN_SAMPLES_EXCLUSIVE and len(images_by_answer) > MIN_ANSWERS_EXCLUSIVE
                and "or" not in question.split()):
            kept[question] = images_by_answer

    if check_images:
        _check_images(root, kept, ids_by_question)

    tasks: dict[str, dict] = {}
    for question, images_by_answer in kept.items():
        support, query = [], []
        for answer, images in images_by_answer.items():
            cut = round(len(images) * SUPPORT_FRACTION)
            shuffled = images.copy()
            random.Random(seed).shuffle(shuffled)
            support += [[img, answer] for img in shuffled[:cut]]
            query += [[img, answer] for img in shuffled[cut:]]
        tasks[question] = {"train": support, "test": query, "answers": list(images_by_answer)}

    order = list(tasks)
    random.Random(seed).shuffle(order)
    cut = round(len(order) * META_TRAIN_FRACTION)
    meta_test = {q: tasks[q] for q in order[cut:]}
    meta_train = {q: tasks[q] for q in order[:cut]}
    if not tasks:
        raise MetaVQAError(f"{root}: the Meta-VQA rules keep 0 question(s) (each needs > {MIN_SAMPLES_EXCLUSIVE} "
                           f"samples and > {MIN_ANSWERS_EXCLUSIVE} answers seen twice, answer type number/other, no "
                           f"word 'or'); nothing written")
    return meta_train, meta_test


def _check_images(root, kept: dict, ids_by_question: dict) -> None:
    for question, images_by_answer in kept.items():
        for images in images_by_answer.values():
            for name in images:
                if find_image(root, name) is None:
                    where = image_dir(root, name.split("_")[1])
                    raise MetaVQAError(f"{where}: image {name}(.jpg|.png) not found, needed by question "
                                       f"{question!r} (question ids {ids_by_question[question][:3]}...)")


def write_meta_vqa(meta_train: dict, meta_test: dict, out: os.PathLike) -> tuple[Path, Path]:
    """Write as the authors' script does (json.dump with default settings), each file atomically."""
    out = Path(out)
    paths = out / "meta_train.json", out / "meta_test.json"
    try:
        atomic_write_bytes(paths[1], json.dumps(meta_test).encode())
        atomic_write_bytes(paths[0], json.dumps(meta_train).encode())
    except OSError as e:
        if out.is_dir():   # both files or neither
            for path in paths:
                path.unlink(missing_ok=True)
        raise MetaVQAError(f"{out}: cannot write meta_train.json / meta_test.json there ({e.strerror or e})") from None
    return paths


def load_meta_vqa(meta_dir: os.PathLike) -> tuple[dict, dict]:
    """Read meta_train.json / meta_test.json (ours or the authors' release) and check their shape."""
    out = []
    for name in ("meta_train.json", "meta_test.json"):
        path = Path(meta_dir) / name
        data = read_json(path)
        if not isinstance(data, dict) or not data:
            raise MetaVQAError(f"{path}: expected a non-empty object mapping questions to tasks")
        for question, task in data.items():
            for key in ("train", "test", "answers"):
                if not isinstance(task, dict) or not isinstance(task.get(key), list) or not task[key]:
                    raise MetaVQAError(f"{path}: task {question!r} lacks a non-empty list under {key!r}")
            for pair in task["train"] + task["test"]:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                        and pair[1] in task["answers"]):
                    raise MetaVQAError(f"{path}: task {question!r} has a sample {pair!r} that is not "
                                       f"[image_name, answer] with a string image name and an answer from its 'answers'")
        out.append(data)
    leaked = sorted(out[0].keys() & out[1].keys())
    if leaked:
        raise MetaVQAError(f"{Path(meta_dir) / 'meta_test.json'}: {len(leaked)} question(s) are meta-train tasks too "
                           f"(e.g. {leaked[0]!r}); a meta-test task must be unseen")
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# Tasks as the rest of the library sees them


@dataclass(frozen=True)
class Task:
    question: str
    answers: tuple[str, ...]
    support: tuple[tuple[str, str], ...]   # (image name, answer)
    query: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TaskSplit:
    train: tuple[Task, ...]
    test: tuple[Task, ...]

    @staticmethod
    def from_meta(meta_train: dict, meta_test: dict) -> "TaskSplit":
        def tasks(meta):
            return tuple(Task(q, tuple(t["answers"]), tuple(map(tuple, t["train"])), tuple(map(tuple, t["test"])))
                         for q, t in meta.items())
        return TaskSplit(tasks(meta_train), tasks(meta_test))

    def all_tasks(self) -> tuple[Task, ...]:
        return self.train + self.test

    def image_names(self) -> list[str]:
        """Every image any task uses, each once, in first-use order."""
        return list(dict.fromkeys(img for t in self.all_tasks() for img, _ in t.support + t.query))


def statistics_table(split: TaskSplit) -> dict[str, float]:
    """The numbers the paper reports for Meta-VQA (A.4), for any split."""
    tasks = split.all_tasks()
    sizes = [len(t.support) + len(t.query) for t in tasks]
    return {
        "tasks": len(tasks), "meta-train tasks": len(split.train), "meta-test tasks": len(split.test),
        "image-answer pairs": sum(sizes),
        "answers per task (mean)": statistics.fmean(len(t.answers) for t in tasks),
        "support size (mean)": statistics.fmean(len(t.support) for t in tasks),
        "query size (mean)": statistics.fmean(len(t.query) for t in tasks),
        "samples per task (median)": statistics.median(sizes),
    }


PAPER_STATISTICS = {  # paper A.4 (the authors' release holds 1243 tasks; the text says 1234)
    "tasks": 1243, "meta-train tasks": 870, "meta-test tasks": 373, "image-answer pairs": 104112,
    "answers per task (mean)": 9.13, "support size (mean)": 57.85, "query size (mean)": 25.9,
    "samples per task (median)": float("nan"),
}
