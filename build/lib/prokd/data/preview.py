"""PNG previews: one mid-gland axial slice per site with the gland outline."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from prokd.data.layouts import Case  # noqa: E402
from prokd.data.validate import load_case  # noqa: E402
from prokd.io_atomic import atomic_path  # noqa: E402


def write_site_preview(cases: list[Case], path: str | Path) -> Path:
    """Save a PNG with, for the first case of every site, its largest-gland slice.

    The slice is shown at its true in-plane aspect ratio, with the mask outline in red.
    """
    first_per_site: dict[str, Case] = {}
    for case in cases:
        first_per_site.setdefault(case.site, case)
    n = len(first_per_site)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (site, case) in zip(axes[0], first_per_site.items(), strict=True):
        loaded = load_case(case)
        image = sitk.GetArrayFromImage(loaded.image)
        mask = sitk.GetArrayFromImage(loaded.mask)
        k = int(mask.sum(axis=(1, 2)).argmax())
        sx, sy = loaded.image.GetSpacing()[:2]
        extent = (0, image.shape[2] * sx, image.shape[1] * sy, 0)
        ax.imshow(image[k], cmap="gray", extent=extent)
        if mask[k].any():
            ax.contour(
                np.linspace(0, extent[1], image.shape[2]),
                np.linspace(0, extent[2], image.shape[1]),
                mask[k],
                levels=[0.5],
                colors="red",
                linewidths=0.8,
            )
        ax.set_title(f"{site}\n{case.case_id}, slice {k}, {sx:.2f} mm", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
