"""Where the slice grid lands on real scans: image-centred, body-centred and localiser-placed.

For every labelled volume, and for each ``preprocess.crop_centre``, the share of the gland
(ground-truth mask, used here to score only) that falls inside the slice grid and the
distance from the grid's centre to the gland's centroid. Two framings of each scan: as
acquired (prostate-centred), and padded with air into a ``--wide-fov`` mm field of view
with the scan off-centre by ``--shift`` mm (a large pelvic field of view whose centre is
not the gland's).

    .venv/bin/python benchmarks/crop_placement.py \
        --data ../shared/data/real/prostate158 ../shared/data/real/msd-task05

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from prokd.data.layouts import find_cases
from prokd.data.preprocess import CROP_CENTRES, PreprocessSettings, preprocess_volume
from prokd.data.validate import load_case
from prokd.evaluation.bench import cpu_model
from prokd.inference.localise import gland_slab, locate_gland
from prokd.io_atomic import write_json_and_markdown


def _off_centre(image: sitk.Image, fov_mm: float, shift_mm: float) -> sitk.Image:
    """``image`` padded in-plane with its minimum so that its field of view is ``fov_mm``
    and its centre lies ``shift_mm`` along its x axis and ``shift_mm / 2`` along its y axis
    from the padded image's centre."""
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    extra = np.maximum(fov_mm / spacing[:2] - size[:2], 0)
    shift = np.array([shift_mm, shift_mm / 2]) / spacing[:2]
    before = np.clip(np.round(extra / 2 - shift), 0, extra).astype(int)
    after = (extra - before).astype(int)
    value = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.ConstantPad(image, [*map(int, before), 0], [*map(int, after), 0], value)


def _placement(image: sitk.Image, mask: sitk.Image, settings: PreprocessSettings) -> dict:
    """Share of the gland inside the grid and the grid centre's distance to the gland (for
    ``gland``, on the localiser's slab, as prediction cuts it)."""
    gland_mm3 = float((sitk.GetArrayViewFromImage(mask) > 0).sum()) * np.prod(mask.GetSpacing())
    centre = None
    if settings.crop_centre == "gland":
        location = locate_gland(image)
        image, mask, centre = (
            gland_slab(image, location),
            gland_slab(mask, location),
            location.centre,
        )
    _, on_grid, _ = preprocess_volume(image, mask, settings, centre)
    kept_mm3 = on_grid.sum() * settings.spacing_mm**2 * image.GetSpacing()[2]
    _, yy, xx = np.nonzero(on_grid)
    if not len(xx):
        return {"gland_kept": 0.0, "offset_mm": None}
    middle = (settings.size - 1) / 2
    offset = np.hypot(xx.mean() - middle, yy.mean() - middle) * settings.spacing_mm
    return {"gland_kept": float(kept_mm3 / gland_mm3), "offset_mm": float(offset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="labelled dataset folders")
    parser.add_argument("--size", type=int, default=128, help="slice grid pixels (128)")
    parser.add_argument("--fov", type=float, default=128.0, help="slice grid mm (128)")
    parser.add_argument("--wide-fov", type=float, default=400.0, help="padded field of view")
    parser.add_argument("--shift", type=float, default=80.0, help="scan offset in the padding")
    parser.add_argument("--out", default="benchmarks/results/crop_placement", help="stem")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for folder in args.data:
        for case in find_cases(folder)[1]:
            loaded = load_case(case)
            image, mask = loaded.image, loaded.mask
            framings = {
                "as acquired": (image, mask),
                "off-centre in wide field": (
                    _off_centre(image, args.wide_fov, args.shift),
                    _off_centre(mask, args.wide_fov, args.shift),
                ),
            }
            for framing, (framed, framed_mask) in framings.items():
                for centre in CROP_CENTRES:
                    settings = PreprocessSettings(args.size, args.fov, crop_centre=centre)
                    row = {"case": case.case_id, "framing": framing, "crop_centre": centre}
                    rows.append(row | _placement(framed, framed_mask, settings))
            print(
                case.case_id,
                [round(r["gland_kept"], 3) for r in rows[-2 * len(CROP_CENTRES) :]],
                flush=True,
            )
    summary = []
    for framing in ("as acquired", "off-centre in wide field"):
        for centre in CROP_CENTRES:
            chosen = [r for r in rows if r["framing"] == framing and r["crop_centre"] == centre]
            offsets = [r["offset_mm"] for r in chosen if r["offset_mm"] is not None]
            summary.append(
                {
                    "framing": framing,
                    "crop_centre": centre,
                    "mean_gland_kept": statistics.mean(r["gland_kept"] for r in chosen),
                    "min_gland_kept": min(r["gland_kept"] for r in chosen),
                    "mean_offset_mm": statistics.mean(offsets) if offsets else None,
                    "max_offset_mm": max(offsets) if offsets else None,
                }
            )
    command = "python benchmarks/crop_placement.py --data " + " ".join(args.data)
    command += f" --size {args.size} --fov {args.fov:g} --wide-fov {args.wide_fov:g}"
    command += f" --shift {args.shift:g}"
    result = {
        "command": command,
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "settings": dataclasses.asdict(PreprocessSettings(args.size, args.fov)),
        "rows": rows,
        "summary": summary,
        "wall_seconds": time.perf_counter() - started,
    }
    lines = [
        "# Crop placement on real scans: image-centred against body-centred slice grids",
        "",
        f"Made by `{command}` on {result['cpu']} in {result['wall_seconds']:.0f} s. "
        f"{len(rows) // 4} labelled volumes; a {args.fov:g} mm grid of {args.size} px. "
        "'off-centre in wide field': each scan padded with air to a "
        f"{args.wide_fov:g} mm field of view, its centre {args.shift:g} mm along x and "
        f"{args.shift / 2:g} mm along y from the padded image's centre. The masks score the "
        "placement only; the grid never sees them.",
        "",
        "| framing | crop_centre | mean gland kept | min gland kept | mean offset mm | "
        "max offset mm |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s['framing']} | {s['crop_centre']} | {s['mean_gland_kept']:.3f} | "
        f"{s['min_gland_kept']:.3f} | "
        + " | ".join(
            "-" if v is None else f"{v:.1f}" for v in (s["mean_offset_mm"], s["max_offset_mm"])
        )
        + " |"
        for s in summary
    ]
    lines += ["", "Per volume:", "", "| case | framing | crop_centre | gland kept | offset mm |"]
    lines += ["|---|---|---|---:|---:|"]
    lines += [
        f"| {r['case']} | {r['framing']} | {r['crop_centre']} | {r['gland_kept']:.3f} | "
        + ("-" if r["offset_mm"] is None else f"{r['offset_mm']:.1f}")
        + " |"
        for r in rows
    ]
    write_json_and_markdown(args.out, result, "\n".join(lines))
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
