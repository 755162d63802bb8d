"""Command line entry point: ``prokd <command>``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from prokd.cli.bank_command import add_bank_parser
from prokd.cli.data_commands import add_data_parsers
from prokd.cli.registry import COMMANDS, command
from prokd.cli.serve_command import add_serve_parser
from prokd.errors import DataWarning, ProkdError, one_line_warnings
from prokd.extras import TRAIN_EXTRA_HINT, TRAIN_EXTRA_MODULES, train_extra_installed
from prokd.version import __version__

# Config keys a command does not use: set in a YAML file, they are reported as ignored.
TRAIN_IGNORES = ("experiment",)
EXPERIMENT_IGNORES = ("model", "distill.teachers", "distill.weighting")
MODEL_HELP = "bundled model (prostate-t2), checkpoint, run folder, .onnx or .ts file"


@command("models")
def _models(args: argparse.Namespace) -> int:
    from prokd.inference.bundled import BUNDLED
    from prokd.inference.model_files import bundled_table

    networks = [name for name in args.names if name not in BUNDLED]
    bundled = [name for name in args.names if name in BUNDLED]
    if networks or (not args.names and train_extra_installed()):
        from prokd.models.profile import models_table

        print(models_table(networks, args.size))
    elif not args.names:
        print(f"registered networks: {TRAIN_EXTRA_HINT} to list and train them")
    if bundled or not args.names:
        print(bundled_table(bundled))
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from prokd.training.config import load_config
    from prokd.training.distributed import context_from_env
    from prokd.training.single_run import train_single

    config = load_config(args.config, ignored=TRAIN_IGNORES)
    if args.data:
        config = config.replace(data={"root": args.data})
    out = Path(args.out or Path("runs") / f"{Path(args.config).stem}-{config.model}")
    context = context_from_env(args.device)
    summary = train_single(config, out, args.resume, context=context)
    if not context.is_main:
        return 0
    best = summary["best_val_dice"]
    best_text = "n/a (no validation case)" if best is None else f"{best:.4f}"
    print(f"{out}: best validation Dice {best_text} at epoch {summary['best_epoch']}")
    return 0


@command("experiment")
def _experiment(args: argparse.Namespace) -> int:
    from prokd.evaluation.report import console_summary
    from prokd.training.config import load_config
    from prokd.training.distributed import context_from_env
    from prokd.training.experiment import run_experiment

    config = load_config(args.config, ignored=EXPERIMENT_IGNORES)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    start = time.perf_counter()
    results = run_experiment(
        config, out, args.data, context=context_from_env(args.device), jobs=args.jobs
    )
    if results is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    print(console_summary(results))
    print(
        f"experiment finished in {time.perf_counter() - start:.0f} s; report: {out / 'report.md'}"
    )
    return 0


@command("study")
def _study(args: argparse.Namespace) -> int:
    from prokd.training.study import load_study, run_study

    study = load_study(args.study)
    out = Path(args.out or Path("runs") / Path(args.study).stem)
    start = time.perf_counter()
    run_study(
        study,
        out,
        args.data,
        jobs=args.jobs,
        publish=args.publish,
        run_cells=not args.summarise,
        command=_study_command(args, out),
        only=tuple(args.only or ()),
        records=args.records,
    )
    print((out / "study.md").read_text())
    print(f"study finished in {time.perf_counter() - start:.0f} s; summary: {out / 'study.md'}")
    return 0


def _study_command(args: argparse.Namespace, out: Path) -> str:
    """The ``prokd study`` command line these arguments make (recorded in the summary)."""
    words = ["prokd", "study", args.study, "--out", str(out)]
    words += ["--data", args.data] if args.data else []
    words += ["--jobs", str(args.jobs)] if args.jobs != 1 else []
    words += ["--publish", args.publish] if args.publish else []
    words += ["--only", *args.only] if args.only else []
    words += ["--records", args.records] if args.records else []
    return " ".join(words + (["--summarise"] if args.summarise else []))


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from prokd.inference.segment import segment_inputs

    for done in segment_inputs(
        args.model,
        args.input,
        args.output,
        args.probabilities,
        not args.no_postprocess,
        args.channel,
        args.batch_size,
        args.overwrite,
        args.device,
        args.crop_centre,
        args.output_format,
        args.series,
    ):
        if done.source.note:
            print(f"{done.source.path}: {done.source.note}")
        print(f"{done.mask}: {done.qc.gland_ml:.1f} ml, {done.seconds:.2f} s")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from prokd.evaluation.evaluate import evaluate_model_file, format_summary

    report = evaluate_model_file(
        args.model, args.data, args.layout, args.out, not args.no_postprocess, args.device
    )
    print(f"{report.model} ({report.kind}) on {args.data} [{report.layout}], {report.cases} cases")
    print(format_summary(report.summary))
    print(f"per-case metrics: {report.out / 'metrics.csv'}; summary: {report.out / 'summary.json'}")
    return 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    from prokd.errors import DataError
    from prokd.inference.export import export_model
    from prokd.inference.trained import load_trained_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DataError(out, "output exists; pass --overwrite to replace it")
    path = export_model(load_trained_model(args.checkpoint), args.format, out, args.with_taps)
    taps = " with feature taps" if args.with_taps else ""
    print(f"wrote {path} ({args.format}{taps}, {path.stat().st_size / 1e6:.1f} MB)")
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    from prokd.devices import resolve_device
    from prokd.evaluation.bench import bench_table, run_bench, write_bench

    result = run_bench(args.models, args.size, args.threads, args.runs, resolve_device(args.device))
    print(bench_table(result))
    json_path, md_path = write_bench(result, args.out)
    print(f"wrote {json_path} and {md_path}")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from prokd.evaluation.report import build_report

    md_path, html_path = build_report(args.run_dir)
    print(f"wrote {md_path} and {html_path}")
    return 0


def _device_argument(parser: argparse.ArgumentParser) -> None:
    from prokd.devices import DEVICES

    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where torch runs: auto (CUDA when available), cpu or cuda",
    )


def _protocol_arguments(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    """The file, ``--out``, ``--data`` and ``--jobs`` of ``experiment`` and ``study``."""
    parser.add_argument(name, metavar=name.upper(), help=what)
    parser.add_argument("--out", metavar="DIR", help=f"output folder (default runs/<{name}>)")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (overrides data.root)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="independent training steps of an experiment run as this many parallel "
        "processes, splitting the cores (default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from prokd.data.layouts import LAYOUTS
    from prokd.data.preprocess import CROP_CENTRES

    parser = argparse.ArgumentParser(
        prog="prokd",
        description="Distil prostate MRI segmentation teachers into fast CPU students.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"prokd {__version__}")
    # No abbreviated options: `predict ... --out X` would silently mean --output-format.
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=partial(argparse.ArgumentParser, allow_abbrev=False),
    )

    p = sub.add_parser("models", help="networks (parameters, FLOPs, taps) and bundled models")
    p.add_argument("names", nargs="*", metavar="MODEL", help="networks or bundled models")
    p.add_argument("--size", type=int, default=128, help="slice size in pixels (default 128)")

    p = sub.add_parser("train", help="train one network (teacher, baseline or distilled student)")
    p.add_argument("config", metavar="CONFIG", help="YAML config (model, train, loss, distill)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<config>-<model>)")
    p.add_argument("--data", metavar="DIR", help="dataset folder (overrides data.root)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    _device_argument(p)

    p = sub.add_parser(
        "experiment",
        help="run the whole protocol: teachers, baselines, procedures 1 and 2, evaluation, report",
    )
    _protocol_arguments(p, "config", "YAML experiment config")
    _device_argument(p)

    p = sub.add_parser(
        "study",
        help="a grid of regimes x seeds (one experiment each) with paired tests and plots",
    )
    _protocol_arguments(p, "study", "YAML study file (base config, seeds, regimes)")
    p.add_argument(
        "--publish",
        metavar="DIR",
        help="also write the summary as DIR/<study>.md with JSON and figures beside it",
    )
    p.add_argument(
        "--summarise",
        action="store_true",
        help="summarise the finished cells only; run none (the summary lists missing seeds)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="REGIME",
        help="run only these regimes' cells (a fold study's regimes are REGIME-SOURCE), in "
        "the file's order; the summary still covers every finished cell",
    )
    p.add_argument(
        "--records",
        metavar="DIR",
        help="keep each finished cell's record (config, split, results, per-volume metrics, QC "
        "rows, time) and each fold's localiser in DIR, and restore from DIR the cells --out "
        "lacks: a study that spans sessions whose run folders are lost (commit DIR)",
    )

    p = sub.add_parser("predict", help="segment volumes: masks with the input's exact geometry")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument(
        "input",
        metavar="INPUT",
        help="volume file, DICOM series (folder or one of its files), or a folder of volumes "
        "or DICOM studies",
    )
    p.add_argument(
        "output",
        metavar="OUTPUT",
        help="mask file (.nii.gz, .mha, .nrrd, or .dcm for a DICOM SEG or, with "
        "--output-format rtstruct, an RT Structure Set), or a folder",
    )
    p.add_argument(
        "--series",
        metavar="UID|NUMBER",
        help="DICOM series to segment in each study (default: the axial T2)",
    )
    p.add_argument(
        "--output-format",
        choices=["nifti", "dicom-seg", "rtstruct"],
        help="format of the masks written into an output folder, or of a .dcm output file "
        "(default: the input's own format, NIfTI for DICOM input; a .dcm file is a DICOM SEG)",
    )
    p.add_argument(
        "--probabilities",
        action="store_true",
        help="also write <name>_probabilities (gland probability, float32)",
    )
    p.add_argument(
        "--no-postprocess",
        action="store_true",
        help="keep the raw mask (default: largest 3D component, holes filled)",
    )
    p.add_argument("--channel", type=int, help="T2 channel of 4D inputs (e.g. 0 for MSD)")
    p.add_argument("--batch-size", type=int, default=32, help="slices per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--crop-centre",
        choices=CROP_CENTRES,
        help="centre the slice grid on the gland the localiser finds in the whole volume "
        "(default, for every model), or on the image or the body",
    )
    _device_argument(p)

    p = sub.add_parser("evaluate", help="per-volume metrics (Dice, IoU, HD95, ASSD) per site")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--data", required=True, metavar="DIR", help="labelled dataset folder")
    p.add_argument("--layout", choices=sorted(LAYOUTS), help="dataset layout (default: detect)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/evaluate/...)")
    p.add_argument("--no-postprocess", action="store_true", help="score the raw masks")
    _device_argument(p)

    p = sub.add_parser("export", help="export a trained network to ONNX or TorchScript")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint or run folder")
    p.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    p.add_argument("--out", required=True, metavar="PATH", help="output file (.onnx or .ts)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    taps_help = "ONNX: also output the feature taps (a site teacher file for distillation)"
    p.add_argument("--with-taps", action="store_true", help=taps_help)

    p = sub.add_parser("bench", help="params, FLOPs and CPU latency (torch and onnxruntime)")
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="registered network, bundled model, checkpoint, run folder, .onnx or .ts file; "
        "ratios are against the first",
    )
    p.add_argument("--size", type=int, nargs="+", default=[128, 256], help="slice sizes")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per measurement")
    p.add_argument("--out", default="results/bench", help="output path stem (.json and .md)")
    _device_argument(p)

    p = sub.add_parser("report", help="report.md and self-contained report.html of a run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="experiment or training run folder")

    add_data_parsers(sub)
    add_bank_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a prokd command; user errors print one line and return a non-zero code."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = one_line_warnings(args.command)
            return COMMANDS[args.command](args)
    except ProkdError as err:
        print(f"prokd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        print(
            f"prokd {args.command}: error: this needs {err.name}, which the base install "
            f"leaves out; {TRAIN_EXTRA_HINT}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"prokd {args.command}: interrupted", file=sys.stderr)
        return 130
