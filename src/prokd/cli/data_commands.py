"""``prokd`` subcommands that make or list data: ``phantom``, ``synth-pelvis``, ``inspect``."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from prokd.cli.registry import command


@command("phantom")
def _phantom(args: argparse.Namespace) -> int:
    from prokd.data.layouts import find_cases
    from prokd.data.phantom import write_phantom
    from prokd.data.preview import write_site_preview

    start = time.perf_counter()
    cases = write_phantom(
        args.out_dir,
        args.sites,
        args.cases_per_site,
        args.seed,
        workers=args.workers,
        show_progress=True,
    )
    elapsed = time.perf_counter() - start
    print(f"wrote {len(cases)} cases in {elapsed:.1f} s to {args.out_dir} (six-site layout)")
    if args.dicom:
        from prokd.data.dicom_write import write_studies

        _, manifest = find_cases(args.out_dir, "six-site")
        volumes = [(case.case_id, case.image) for case in manifest]
        write_studies(volumes, args.dicom)
        print(f"DICOM: {len(volumes)} studies in {args.dicom} (<site>/<case>/t2/*.dcm)")
    if args.preview:
        _, manifest = find_cases(args.out_dir, "six-site")
        png = write_site_preview(manifest, Path(args.out_dir) / "preview.png")
        print(f"preview: {png}")
    return 0


@command("inspect")
def _inspect(args: argparse.Namespace) -> int:
    from prokd.data.inventory import (
        dicom_inventory,
        format_inventory,
        inspect_cases,
        inspect_dataset,
    )
    from prokd.data.layouts import is_dicom_folder

    if args.layout is None and is_dicom_folder(Path(args.data_dir)):
        text, usable = dicom_inventory(args.data_dir)
        print(text)
        return 0 if usable else 1
    if Path(args.data_dir).suffix in (".yaml", ".yml"):
        from prokd.training.config import load_config
        from prokd.training.runs import prepare_data

        data = prepare_data(load_config(args.data_dir))
        layout, records = data.layout, inspect_cases(data.cases + data.unlabelled)
    else:
        layout, records = inspect_dataset(args.data_dir, args.layout)
    print(format_inventory(layout, records))
    return 1 if any(r.error for r in records) else 0


@command("synth-pelvis")
def _synth_pelvis(args: argparse.Namespace) -> int:
    from prokd.data.synth_pelvis import write_synthetic_pelvis

    start = time.perf_counter()
    count = write_synthetic_pelvis(args.labels_dir, args.out_dir, args.seed, show_progress=True)
    elapsed = time.perf_counter() - start
    print(f"wrote {count} synthetic pelvis cases in {elapsed:.1f} s to {args.out_dir}")
    return 0


@command("simulate")
def _simulate(args: argparse.Namespace) -> int:
    from prokd.data.simulate import write_simulated

    start = time.perf_counter()
    count = write_simulated(
        args.data_dir, args.out_dir, args.protocol, args.seed, args.layout, show_progress=True
    )
    elapsed = time.perf_counter() - start
    print(f"wrote {count} {args.protocol} cases in {elapsed:.1f} s to {args.out_dir}")
    return 0


def add_data_parsers(sub: argparse._SubParsersAction) -> None:
    """The parsers of this module's subcommands."""
    from prokd.data.layouts import LAYOUTS

    p = sub.add_parser("phantom", help="generate the synthetic multi-site benchmark")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new folder to write the six-site layout to")
    p.add_argument("--sites", type=int, default=6, help="number of sites, 1-6 (default 6)")
    p.add_argument("--cases-per-site", type=int, default=10, help="volumes per site (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes to use; the output does not depend on it",
    )
    p.add_argument(
        "--dicom",
        metavar="DIR",
        help="also write every case as a DICOM study (an axial T2 series) under this new folder",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write preview.png: one mid-gland slice per site",
    )

    p = sub.add_parser(
        "synth-pelvis",
        help="large-field-of-view pelvis images synthesised from label maps (six-site layout)",
    )
    p.add_argument(
        "labels_dir",
        metavar="LABELS_DIR",
        help="folder of pelvis label maps (0 outside, 1 body, 2 bone, 3 bladder, 4 rectum, "
        "5 prostate), e.g. ../shared/data/hipmri-labels",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="new folder to write the cases to")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    from prokd.data.simulate import PROTOCOLS

    p = sub.add_parser(
        "simulate",
        help="labelled volumes as another protocol acquires them (coil, large FOV, non-axial)",
    )
    p.add_argument("protocol", choices=PROTOCOLS, metavar="PROTOCOL", help=", ".join(PROTOCOLS))
    p.add_argument("data_dir", metavar="DATA_DIR", help="labelled dataset folder")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new folder (six-site layout)")
    p.add_argument("--layout", choices=sorted(LAYOUTS), help="dataset layout (default: detect)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = sub.add_parser("inspect", help="list cases, shapes, spacings, gland volumes and problems")
    p.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        help="dataset folder, or a YAML config (its data.root and data.sources)",
    )
    p.add_argument("--layout", choices=sorted(LAYOUTS), help="dataset layout (default: detect)")
