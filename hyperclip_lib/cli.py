"""The `hyperclip` command.

    hyperclip build-metavqa --vqa-root ROOT --out OUT [--check-images]
    hyperclip build-world --out DIR [--profile quick] [--labels-only] [--set world.n_images=500]
    hyperclip prepare [--profile quick] [--set key=value ...]
    hyperclip train-world-clip [--profile quick] [--out DIR] [--set key=value ...]
    hyperclip extract-features --vqa-root ROOT [--meta-dir DIR] --model M --pretrained P --out FILE.npz
                               [--device cuda] [--no-texts]
    hyperclip split-stats META_DIR [META_DIR ...] [--no-text]
    hyperclip world-bands [--profile quick] [--seeds 0,1,2] [--set world.FIELD=VALUE ...]
    hyperclip baseline-bands [--profile quick] [--seeds 0,1,2] [--methods M1,M2] [--set key=value ...]
    hyperclip rehearse-real [--out runs/rehearsal] [--meta-dir DIR] [--tasks N] [--profile paper] [--set ...]
    hyperclip run-notebooks [--profile quick] [--out runs/quick] [--seeds 0,1,2] [--fractions 1.0,0.5]
                            [--fig5b-fractions 0.1] [--jobs 1] [--force] [--set key=value ...]
                            [--executor local|ray|slurm|submitit-local] [--cpus-per-job N] [--gpus-per-job G]
                            [--ray-address ADDR] [--slurm KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from . import numerics
from .batch import execute, plan_run, status_rows, write_summary
from .analysis import family_table
from .calibration import calibrate, summarize, support_majority
from .config import PROFILES, get_config, parse_numbers, parse_overrides
from .executors import EXECUTORS, make_executor
from .metavqa import (PAPER_STATISTICS, MetaVQAError, TaskSplit, build_meta_vqa, load_meta_vqa, statistics_table,
                      write_meta_vqa)
from .models.families import RECIPES
from .report import write_report
from .records import BASELINE_BANDS, baseline_statistics, summary_table
from .runlock import RunFolderBusy
from .splitstats import LABEL_BANDS, MIX_BANDS, authors_split_dir, band_misses, minilm_embedder, split_statistics
from .encoders import open_clip_encoder
from .features import FeatureFile
from .stages.data import (SHIPPED, ensure_data, image_paths, prepare, texts_to_embed, train_world_clip_into,
                          world_clip_config)
from .stages.baselines import run_baselines, selection_metric
from .store import ArtifactStore, config_hash, file_sha256
from .world import generate_world, question_family, question_label


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set world.n_images=500 (repeatable)")


def cmd_build_metavqa(args) -> int:
    meta_train, meta_test = build_meta_vqa(args.vqa_root, seed=args.seed, check_images=args.check_images)
    paths = write_meta_vqa(meta_train, meta_test, args.out)
    stats = statistics_table(TaskSplit.from_meta(meta_train, meta_test))
    print(f"wrote {paths[0]} ({len(meta_train)} tasks) and {paths[1]} ({len(meta_test)} tasks)")
    print(json.dumps(stats, indent=1))
    return 0


def cmd_build_world(args) -> int:
    cfg = get_config(args.profile, parse_overrides(args.overrides))
    print(json.dumps(generate_world(cfg.world, Path(args.out), images=not args.labels_only), indent=1))
    return 0


def cmd_prepare(args) -> int:
    """Build the world, Meta-VQA, the encoder and features; print statistics and calibration."""
    cfg = get_config(args.profile, parse_overrides(args.overrides))
    numerics.apply(cfg.compute.threads)
    t0 = time.perf_counter()
    result = prepare(cfg)
    stats = statistics_table(result["data"].split)
    print(f"\nMeta-VQA statistics ({args.profile}) beside the paper's (A.4):")
    for k, v in stats.items():
        print(f"  {k:28s} {v:10.2f}   paper {PAPER_STATISTICS[k]:10.2f}")
    print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["timings"].items())
          + f"; total {time.perf_counter() - t0:.0f}")
    rows = calibrate(result["features"], result["data"].split.test, cfg.calibration)
    print(f"\ncalibration on {len(rows)} meta-test query sets (accuracy %, task mean / sample-weighted):")
    summary = summarize(rows)
    for method, acc in summary.items():
        print(f"  {method:50s} {acc['task_mean']:6.2f} / {acc['sample_weighted']:6.2f}")
    floor = summary["CLIP as base model (zero-shot floor)"]["task_mean"]
    ceiling = summary["adapter fine-tuned on support (few-shot ceiling)"]["task_mean"]
    print(f"  gap ceiling - floor: {ceiling - floor:.2f} points")
    return 0


def cmd_train_world_clip(args) -> int:
    """Train the profile's world CLIP into an artifact store (default: the library's shipped ones) and print
    what hyperclip_lib/assets/README.md lists for it."""
    cfg = get_config(args.profile, parse_overrides(args.overrides))
    numerics.apply(cfg.compute.threads)
    store = ArtifactStore(Path(args.out) if args.out else SHIPPED)
    t0 = time.perf_counter()
    folder = train_world_clip_into(cfg, store)
    print(f"world CLIP ({args.profile}) in {folder} after {time.perf_counter() - t0:.0f} s; key "
          f"{config_hash(world_clip_config(cfg))}; model.pt SHA-256 {file_sha256(folder / 'model.pt')}")
    return 0


def cmd_extract_features(args) -> int:
    """Encode every image of a Meta-VQA split (and, unless --no-texts, its questions and answer prompts) with an
    open_clip model into one features file, for `--set data.image_features=FILE` on another machine."""
    cfg = get_config(args.profile, {**parse_overrides(args.overrides), "data.vqa_root": args.vqa_root,
                                    "data.meta_dir": args.meta_dir, "encoder.backend": "open_clip"})
    numerics.apply(cfg.compute.threads)
    data = ensure_data(cfg)
    encoder = open_clip_encoder(args.model, None if args.pretrained.lower() == "none" else args.pretrained,
                                args.device or cfg.encoder.device, args.batch_size or cfg.encoder.batch_size)
    names = data.split.image_names()
    features = encoder.encode_images(image_paths(data), progress=True)
    texts = [] if args.no_texts else texts_to_embed(data.split, data.templates, cfg.encoder.prompt_template)
    embeddings = encoder.encode_texts(texts, progress=True) if texts else torch.empty(0, features.shape[1])
    path = FeatureFile(encoder.name, names, features, texts, embeddings).save(args.out)
    print(f"wrote {path}: {len(names)} images and {len(texts)} texts, width {features.shape[1]}, "
          f"encoder {encoder.name}")
    return 0


def cmd_split_stats(args) -> int:
    """Label-only statistics of Meta-VQA splits side by side (leakage, priors, nearest questions, sizes)."""
    embed = None if args.no_text else minilm_embedder()
    columns = {}
    for meta_dir in args.meta_dirs:
        split = TaskSplit.from_meta(*load_meta_vqa(meta_dir))
        columns[meta_dir] = split_statistics(split, embed)
    names = list(dict.fromkeys(k for c in columns.values() for k in c))
    width = max(map(len, names))
    print(f"{'':{width}s}  " + "  ".join(f"{Path(d).name[-18:]:>18s}" for d in columns))
    for name in names:
        print(f"{name:{width}s}  " + "  ".join(f"{c.get(name, float('nan')):18.2f}" for c in columns.values()))
    return 0


def _print_bands(columns: dict[str, dict[str, float]], bands: dict[str, tuple[float | None, float | None]]) -> None:
    """One row per statistic, one column per seed (or the real split, or the mean), and the band it must meet."""
    names = list(dict.fromkeys(k for c in columns.values() for k in c))
    width = max(map(len, names))
    print(f"{'':{width}s}  " + "  ".join(f"{c:>9s}" for c in columns) + "  band")
    for name in names:
        low, high = bands.get(name, (None, None))
        band = "" if name not in bands else f"[{'' if low is None else low}, {'' if high is None else high}]"
        print(f"{name:{width}s}  " + "  ".join(f"{c.get(name, float('nan')):9.2f}" for c in columns.values())
              + f"  {band}")


def cmd_world_bands(args) -> int:
    """The label statistics of the profile's world on several world seeds (labels only, no scene drawn), beside
    the authors' split, and the label and question-mix bands each seed misses: one calibration try."""
    given = parse_overrides(args.overrides)
    embed = minilm_embedder()
    bands = {**LABEL_BANDS, **MIX_BANDS}
    columns, misses = {}, {}
    real = authors_split_dir()
    if real is not None:
        columns["real"] = split_statistics(TaskSplit.from_meta(*load_meta_vqa(real)), embed)
    for seed in parse_numbers(args.seeds, int, "--seeds"):
        cfg = get_config(args.profile, {**given, "world.seed": seed})
        with tempfile.TemporaryDirectory() as root:
            generate_world(cfg.world, Path(root), images=False)
            split = TaskSplit.from_meta(*build_meta_vqa(root, seed=cfg.data.split_seed))
        stats = split_statistics(split, embed)
        families = Counter(question_family(t.question) for t in split.all_tasks())
        stats.update({f"tasks of family {f} (%)": 100 * n / len(split.all_tasks()) for f, n in sorted(families.items())})
        columns[f"seed {seed}"] = stats
        misses[seed] = band_misses(stats, bands)
    print(f"world {args.profile} {' '.join(args.overrides)}")
    _print_bands(columns, bands)
    for seed, missed in misses.items():
        print(f"seed {seed}: " + ("every band met" if not missed else "misses " + "; ".join(missed)))
    return 0


def cmd_baseline_bands(args) -> int:
    """The baselines of notebooks 01–02 on the profile's world at its budget, trained for each seed (cached
    stages reused), and the statistics of `records.BASELINE_BANDS` per seed and over seeds, the bands the mean
    misses, and accuracy by question family: the baseline side of one calibration try."""
    seeds = parse_numbers(args.seeds, int, "--seeds")
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    unknown = sorted(set(methods or ()) - set(RECIPES))
    if unknown:
        raise SystemExit(f"--methods: {', '.join(map(repr, unknown))} is not a Table 1 row; expected some of "
                         f"{', '.join(RECIPES)}")
    cfg = get_config(args.profile, parse_overrides(args.overrides))
    numerics.apply(cfg.compute.threads)
    prepared = prepare(cfg)
    data, features = prepared["data"], prepared["features"]
    results = run_baselines(cfg, data, features, methods=methods, seeds=seeds)
    records = [r.record for r in results]
    majority = {t.question: support_majority(features, t) for t in data.split.test}
    mean_majority = sum(majority.values()) / len(majority)
    columns = {f"seed {s}": baseline_statistics([r for r in records if r["seed"] == s], mean_majority) for s in seeds}
    columns["mean"] = baseline_statistics(records, mean_majority)
    print(f"baselines {args.profile} {' '.join(args.overrides)}: {len(data.split.train)} meta-train "
          f"({len(data.train_tasks)} trained on), {len(data.split.test)} meta-test tasks; support majority "
          f"{mean_majority:.2f}")
    table = summary_table(records, "zero_shot").set_index("method")[["mean", "std"]].add_prefix("zero-shot ")
    table = table.join(summary_table(records, "few_shot").set_index("method")[["mean", "std"]].add_prefix("few-shot "))
    table["train (min, mean)"] = pd.Series({m: sum(r["timings"].get("train_s", 0) for r in records if r["method"] == m)
                                           / 60 / len(seeds) for m in table.index})
    # the meta-validation curve each schedule was chosen on (selection_metric), first seed
    curves = {r.record["method"]: r.history for r in results if r.record["seed"] == seeds[0]}
    table["validation curve (first seed)"] = pd.Series({m: " ".join(f"{v:.1f}" for v in h.get(
        f"validation_{selection_metric(RECIPES[m])}", [])) for m, h in curves.items()})
    table["chosen step / last"] = pd.Series({m: f"{h.get('chosen_step', '')}/{h['step'][-1] if h.get('step') else ''}"
                                             for m, h in curves.items()})
    print(table.round(2).to_string())
    _print_bands(columns, BASELINE_BANDS)
    missed = band_misses(columns["mean"], BASELINE_BANDS)
    print("mean over seeds: " + ("every band met" if not missed else "misses " + "; ".join(missed)))
    families = family_table(records).T   # one row per question family, its task count last
    if not families.empty:
        families.insert(0, "support majority", pd.Series(majority).groupby(question_label).mean())
        print(families.round(1).to_string())
    return 0


def _numbers(text: str | None, kind, name: str):
    return None if text is None else parse_numbers(text, kind, name)


def _submitit_parameters(pairs: list[str]) -> dict:
    """--slurm KEY=VALUE ... -> submitit's AutoExecutor parameters (numbers read as numbers)."""
    parameters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm: expected KEY=VALUE (a submitit parameter, e.g. slurm_partition=gpu), "
                             f"got {pair!r}")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        parameters[key] = value
    return parameters


def cmd_run_notebooks(args) -> int:
    """Every notebook into a run folder, resuming a finished job's work; a summary at the end."""
    if args.jobs < 1:
        raise ValueError(f"--jobs expects 1 or more notebooks at a time, got {args.jobs}")
    out = Path(args.out or f"runs/{args.profile}")
    run = plan_run(args.profile, out, seeds=_numbers(args.seeds, int, "--seeds"),
                   fractions=_numbers(args.fractions, float, "--fractions"),
                   fig5b_fractions=_numbers(args.fig5b_fractions, float, "--fig5b-fractions"),
                   overrides=parse_overrides(args.overrides), split_seeds=args.jobs > 1,
                   cell_timeout=-1 if args.cell_timeout is None else args.cell_timeout)
    executor = make_executor(args.executor, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
                             ray_address=args.ray_address, slurm_parameters=_submitit_parameters(args.slurm))
    run.command = "hyperclip " + shlex.join(args.argv)
    print(f"run folder {out.resolve()}: {len(run.jobs)} notebooks, profile {args.profile}, "
          f"{args.jobs} at a time, executor {args.executor}", flush=True)
    start = time.perf_counter()
    status = execute(run, jobs=args.jobs, force=args.force, executor=executor)
    summary = write_summary(run, status, time.perf_counter() - start)
    report = write_report(run, status)
    print("\n" + summary.read_text() + f"\nreport: {report}")
    failed = [name for name, s in status.items() if s in ("failed", "not run")]
    if failed:
        print(f"hyperclip run-notebooks: {len(failed)} notebook(s) failed or were not run: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def cmd_rehearse_real(args) -> int:
    """Every notebook on the authors' real split with stand-in features (rehearsal.py); prints each notebook's
    time and peak memory, the time per stage, and whether every record is well-formed."""
    from .rehearsal import BUDGET, check_records, prepare
    from .records import load_records, stage_times
    from .splitstats import authors_split_dir
    meta_dir = Path(args.meta_dir) if args.meta_dir else authors_split_dir()
    if meta_dir is None:
        raise ValueError("--meta-dir: the authors' split (shared/data/metavqa-authors) is not beside the "
                         "repository; pass the folder holding meta_train.json / meta_test.json / prompt_meta.json")
    out = Path(args.out).resolve()
    os.environ.setdefault("HYPERCLIP_HOME", str(out / "artifacts"))
    budget = BUDGET if args.profile == "paper" else {}
    given = parse_overrides(args.overrides)
    template = get_config(args.profile, given).encoder.prompt_template
    overrides = {**budget, **prepare(out, meta_dir, args.tasks, prompt_template=template), **given}
    run = plan_run(args.profile, out / "run", seeds=[0], fractions=[1.0], fig5b_fractions=[], overrides=overrides)
    run.command = "hyperclip " + shlex.join(args.argv)
    print(f"rehearsal in {out}: {len(run.jobs)} notebooks, profile {args.profile}, store {os.environ['HYPERCLIP_HOME']}",
          flush=True)
    start = time.perf_counter()
    status = execute(run, jobs=1)
    write_summary(run, status, time.perf_counter() - start)
    write_report(run, status)
    print(f"\n{'notebook':16s} {'status':8s} {'minutes':>8s} {'peak MiB':>9s}")
    for name, state, minutes, peak in status_rows(run, status):
        print(f"{name:16s} {state:8s} {minutes:>8s} {peak:>9s}")
    records = load_records(out / "run" / "records") if (out / "run" / "records").exists() else []
    print("\ntime per stage (minutes):\n" + stage_times(records).to_string(index=False) if records else "\nno records")
    n_test = len(load_meta_vqa(out / "meta")[1])
    problems = check_records(records, n_test) if records else ["no records were written"]
    print(f"\n{len(records)} records" + (": every one well-formed" if not problems else "; problems:"))
    for problem in problems:
        print(f"  {problem}")
    failed = [name for name, s in status.items() if s in ("failed", "not run")]
    print(f"total {(time.perf_counter() - start) / 60:.1f} min; accuracies on stand-in features mean nothing and "
          "are not reported")
    return 1 if failed or problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hyperclip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-metavqa", help="VQA v2 files -> meta_train.json / meta_test.json (authors' rules)")
    p.add_argument("--vqa-root", required=True, help="folder with Questions/ and Annotations/ (and Images/)")
    p.add_argument("--out", required=True, help="folder to write meta_train.json and meta_test.json into")
    p.add_argument("--check-images", action="store_true", help="require every referenced image to exist")
    p.add_argument("--seed", type=int, default=2021, help="split seed (the authors': 2021)")
    p.set_defaults(func=cmd_build_metavqa)

    p = sub.add_parser("build-world", help="write the Shapes world in the VQA v2 layout")
    p.add_argument("--out", required=True)
    p.add_argument("--labels-only", action="store_true",
                   help="questions, answers and prompts without drawing a scene (the same labels; for calibrating)")
    _add_config_args(p)
    p.set_defaults(func=cmd_build_world)

    p = sub.add_parser("prepare", help="build world, tasks, encoder and features; print statistics and calibration")
    _add_config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train-world-clip", help="train the profile's world CLIP into an artifact store (default: "
                       "the shipped ones, hyperclip_lib/assets)")
    p.add_argument("--out", default=None, help="artifact store root (default hyperclip_lib/assets)")
    _add_config_args(p)
    p.set_defaults(func=cmd_train_world_clip)

    p = sub.add_parser("extract-features", help="encode a Meta-VQA split's images (and texts) with an open_clip "
                       "model into one features file (data.image_features)")
    p.add_argument("--vqa-root", required=True, help="VQA v2 folder (Questions/, Annotations/, Images/mscoco/)")
    p.add_argument("--meta-dir", default=None, help="a released meta_train.json / meta_test.json folder "
                   "(default: the split the builder makes from --vqa-root)")
    p.add_argument("--model", required=True, help="open_clip model name, e.g. ViT-L-14-336")
    p.add_argument("--pretrained", required=True, help="open_clip pretrained tag (e.g. openai), a local "
                   "checkpoint file, or none")
    p.add_argument("--out", required=True, help="the features file to write (.npz)")
    p.add_argument("--device", default=None, help="default: the config's encoder.device (auto: CUDA if there is a GPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's encoder.batch_size")
    p.add_argument("--no-texts", action="store_true", help="image features only (texts then come from the "
                   "encoder's text tower where the file is used)")
    _add_config_args(p)
    p.set_defaults(func=cmd_extract_features)

    p = sub.add_parser("split-stats", help="label-only statistics of Meta-VQA splits (folders holding "
                       "meta_train.json / meta_test.json), side by side")
    p.add_argument("meta_dirs", nargs="+", metavar="META_DIR")
    p.add_argument("--no-text", action="store_true", help="leave out the rows that need MiniLM question embeddings")
    p.set_defaults(func=cmd_split_stats)

    p = sub.add_parser("world-bands", help="one calibration try: the world's label statistics on several world "
                       "seeds beside the real split, and the bands each misses")
    p.add_argument("--seeds", default="0,1,2", help="world seeds (comma-separated)")
    _add_config_args(p)
    p.set_defaults(func=cmd_world_bands)

    p = sub.add_parser("baseline-bands", help="the baseline side of one calibration try: notebooks 01–02's "
                       "baselines on the profile's world, their band statistics per seed and over seeds, and the "
                       "bands the mean misses")
    p.add_argument("--seeds", default="0,1,2", help="run seeds (comma-separated)")
    p.add_argument("--methods", default=None, help="comma-separated Table 1 rows (default: every one)")
    _add_config_args(p)
    p.set_defaults(func=cmd_baseline_bands)

    p = sub.add_parser("rehearse-real", help="every notebook on the authors' real split with stand-in features: "
                       "time, peak memory, well-formed records (hyperclip_lib/rehearsal.py)")
    p.add_argument("--out", default="runs/rehearsal", help="folder for its inputs, run and artifacts")
    p.add_argument("--meta-dir", default=None, help="the split (default: the authors' beside the repository)")
    p.add_argument("--tasks", type=int, default=None, help="only the first N meta-train tasks (and 30%% as many "
                   "meta-test tasks): a small rehearsal")
    p.add_argument("--profile", default="paper", choices=PROFILES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_rehearse_real)

    p = sub.add_parser("run-notebooks", help="execute every notebook with papermill into a run folder (resumable)")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="run folder: notebooks/, records/, figures/, logs/, summary.md "
                   "(default runs/PROFILE)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0 for ci, 0,1,2 otherwise)")
    p.add_argument("--fractions", default=None, help="descriptor shares for Table 1 (default 1.0 for ci, 1.0,0.5)")
    p.add_argument("--fig5b-fractions", default=None, help="extra shares for Fig. 5B's Cond. Multitask and "
                   "HVAE + HyperLDM (default none for ci, 0.1); '' for none")
    p.add_argument("--jobs", type=int, default=1, help="notebooks run at once, one process per seed (default 1)")
    p.add_argument("--force", action="store_true", help="re-execute finished notebooks (cached stages still reused)")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds one cell may run before its notebook is reported and run once more "
                        "(default: 900 for ci, 5400 for quick, none for paper; 0: no limit)")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="where the notebook jobs run: this machine (local), a Ray cluster (ray), SLURM through "
                        "submitit (slurm), or submitit's local executor (submitit-local); see README")
    p.add_argument("--cpus-per-job", type=float, default=None,
                   help="CPUs a notebook job asks its engine for, ray or slurm (default: compute.threads, the "
                        "threads every notebook computes with, whatever it is given: --set compute.threads=N)")
    p.add_argument("--gpus-per-job", type=float, default=0.0,
                   help="GPUs per notebook job, ray or slurm (ray: fractions share a GPU, e.g. 0.25)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to use (default: RAY_ADDRESS, else a Ray "
                   "instance started on this machine)")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit parameter for the SLURM jobs, e.g. slurm_partition=gpu or timeout_min=600 "
                        "(repeatable; default timeout_min=1440)")
    p.set_defaults(func=cmd_run_notebooks)

    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except (MetaVQAError, KeyError, ValueError, FileNotFoundError, RunFolderBusy) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hyperclip {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
