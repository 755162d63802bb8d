"""``prokd bank``: a teacher labels views of a config's volumes, once, into a view bank."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prokd.cli.registry import command


@command("bank")
def _bank(args: argparse.Namespace) -> int:
    from prokd.data.view_store import ViewStore
    from prokd.data.views import VIEW_KINDS
    from prokd.distill.view_bank import build_bank, plan_views
    from prokd.errors import ConfigError
    from prokd.inference.volume_models import load_volume_model
    from prokd.training.config import load_config
    from prokd.training.runs import config_cases

    unknown = [k for k in args.kinds if k not in VIEW_KINDS or k == "acquired"]
    if unknown:
        kinds = ", ".join(k for k in VIEW_KINDS if k != "acquired")
        raise ConfigError(f"--kinds: unknown view kind {unknown[0]!r} (kinds: {kinds})")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # a 3D teacher's ONNX session takes as many
    config = load_config(args.config, ignored=("experiment", "train", "loss", "distill", "model"))
    cases = config_cases(config)
    teacher = load_volume_model(args.teacher)
    store = ViewStore(args.out, teacher.name, teacher.fingerprint(), teacher.threshold)
    recipes = plan_views(cases, args.views_per_volume, tuple(args.kinds), args.seed)
    started = time.monotonic()
    deadline = started + 60 * args.minutes if args.minutes else None
    report = build_bank(cases, teacher, store, recipes, deadline, show_progress=True)
    summary = {
        "volumes": len(cases),
        "planned": report.planned,
        "found": report.found,
        "made": report.made,
        "teacher_seconds": round(report.teacher_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "stopped_early": report.stopped_early,
    }
    with open(Path(args.out) / "builds.jsonl", "a") as log:
        log.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary}) + "\n")
    done = report.found + report.made
    more = " (stopped at --minutes; run it again to go on)" if report.stopped_early else ""
    print(
        f"{args.out}: {done} of {report.planned} views labelled by {teacher.name} "
        f"({report.made} now, {report.teacher_seconds:.0f} s of teacher time){more}"
    )
    return 0


def add_bank_parser(sub: argparse._SubParsersAction) -> None:
    """The parser of ``prokd bank``."""
    from prokd.data.views import DEFAULT_KINDS  # not view_bank: every command builds this

    p = sub.add_parser(
        "bank",
        help="label views (augmented, resliced, mixed) of a config's volumes with a teacher, once",
        description=(
            "Round 0 labels every volume of the config's data as acquired; each later round "
            "adds one view of every volume. Finished views are kept: run it again with more "
            "views to grow the bank, or after a kill to resume. Train on it with a data "
            "source {root: BANK, labelled: false, bank: true} and the teacher bank:BANK."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="YAML config whose data the views come from")
    p.add_argument("--teacher", required=True, help="taps, a model file, or module:function")
    p.add_argument("--out", required=True, metavar="BANK_DIR", help="the bank folder")
    p.add_argument(
        "--views-per-volume",
        type=int,
        default=2,
        metavar="N",
        help="views of each volume, the volume as acquired included (default 2)",
    )
    p.add_argument(
        "--kinds",
        nargs="+",
        default=list(DEFAULT_KINDS),
        metavar="KIND",
        help=f"view kinds after the first, in turn (default: {' '.join(DEFAULT_KINDS)})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the views (default 0)")
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads of the teacher (default: all)"
    )
    p.add_argument(
        "--minutes", type=float, default=0.0, help="stop after this long (default: no limit)"
    )
