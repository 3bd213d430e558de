"""The `hyperclip` command.

    hyperclip build-metavqa --vqa-root ROOT --out OUT [--check-images]
    hyperclip build-world --out DIR [--profile quick] [--set world.n_images=500]
    hyperclip prepare [--profile quick] [--set key=value ...]
    hyperclip run-notebooks [--profile quick] [--out runs/quick] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import PROFILES, get_config, parse_overrides
from .metavqa import MetaVQAError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set world.n_images=500 (repeatable)")


def cmd_build_metavqa(args) -> int:
    from .metavqa import build_meta_vqa, statistics_table, write_meta_vqa, TaskSplit
    meta_train, meta_test = build_meta_vqa(args.vqa_root, seed=args.seed, check_images=args.check_images)
    paths = write_meta_vqa(meta_train, meta_test, args.out)
    stats = statistics_table(TaskSplit.from_meta(meta_train, meta_test))
    print(f"wrote {paths[0]} ({len(meta_train)} tasks) and {paths[1]} ({len(meta_test)} tasks)")
    print(json.dumps(stats, indent=1))
    return 0


def cmd_build_world(args) -> int:
    from .world import generate_world
    cfg = get_config(args.profile, parse_overrides(args.overrides))
    print(json.dumps(generate_world(cfg.world, Path(args.out)), indent=1))
    return 0


def cmd_prepare(args) -> int:
    """Build the world, Meta-VQA, the encoder and features; print statistics and calibration."""
    from .calibration import calibrate, summarize
    from .metavqa import PAPER_STATISTICS, statistics_table
    from .pipeline import prepare
    cfg = get_config(args.profile, parse_overrides(args.overrides))
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
        print(f"  {method:50s} {acc['task mean']:6.2f} / {acc['sample-weighted']:6.2f}")
    floor = summary["CLIP as base model (zero-shot floor)"]["task mean"]
    ceiling = summary["adapter fine-tuned on support (few-shot ceiling)"]["task mean"]
    print(f"  gap ceiling - floor: {ceiling - floor:.2f} points")
    return 0


def cmd_run_notebooks(args) -> int:
    import papermill
    out = Path(args.out or f"runs/{args.profile}")
    out.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    params = {"profile": args.profile, "overrides": parse_overrides(args.overrides)}
    for nb in notebooks:
        t = time.perf_counter()
        print(f"running {nb.name} ({args.profile}) -> {out / nb.name}", flush=True)
        papermill.execute_notebook(str(nb), str(out / nb.name), parameters=params, cwd=str(NOTEBOOKS),
                                   progress_bar=True)
        print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    print(f"executed {len(notebooks)} notebooks into {out}; figures in {NOTEBOOKS.parent / 'figures'}")
    return 0


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
    _add_config_args(p)
    p.set_defaults(func=cmd_build_world)

    p = sub.add_parser("prepare", help="build world, tasks, encoder and features; print statistics and calibration")
    _add_config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("run-notebooks", help="execute every notebook with papermill")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="folder for executed notebooks (default runs/PROFILE)")
    p.set_defaults(func=cmd_run_notebooks)

    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except (MetaVQAError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hyperclip {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
