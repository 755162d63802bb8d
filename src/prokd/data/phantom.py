"""Synthetic multi-site prostate T2w benchmark, written in the ``six-site`` layout.

Each case is an axial T2-like pelvis (fat, muscles, pubic bone, femoral heads, bladder,
rectum) around a prostate of random volume, shape, position and zonal contrast (darker
transition zone, brighter peripheral zone, faint apex and base). Sites differ in voxel size,
field of view, patient position, gland sizes, and in MRI artefacts applied with MONAI
transforms: blur (resolution), smooth bias field, gamma contrast, intensity scale and Rician
noise; one site has an endorectal-coil flare and a distended rectum.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.transforms import AdjustContrast, GaussianSmooth, RandBiasField, RandRicianNoise
from scipy.ndimage import zoom
from tqdm import tqdm

from prokd.data.io import write_volume
from prokd.data.masks import gland_ml
from prokd.errors import ProkdError
from prokd.io_atomic import atomic_folder

FOV_SLAB_MM = 84.0  # superior-inferior coverage of every acquisition
SUBSLICES = (-0.25, 0.25)  # through-plane partial volume: average of two sub-slices


@dataclass(frozen=True)
class SiteProfile:
    """What differs between acquisition sites of the phantom."""

    name: str
    description: str
    spacing_mm: float  # in-plane voxel size
    slice_mm: float  # slice thickness = spacing between slices
    matrix: int  # in-plane voxels per side
    gland_ml: tuple[float, float]  # range of prostate volumes
    offset_mm: tuple[float, float]  # mean position of the gland relative to the FOV centre
    blur_mm: float  # in-plane Gaussian blur (lower effective resolution)
    bias: float  # bias field coefficient range (+-)
    gamma: float  # contrast curve
    scale: float  # overall signal scale
    noise: float  # Rician noise std, relative to the brightest tissue
    endorectal_coil: bool = False


# fmt: off
SITES: tuple[SiteProfile, ...] = (
    SiteProfile("SiteA", "3T, fine 0.5 mm grid, clean, mild bias", 0.5, 3.0, 256,
                (25, 60), (0, 0), 0.0, 0.10, 1.0, 1.0, 0.02),
    SiteProfile("SiteB", "1.5T-like: noisier, flatter contrast, strong bias field", 0.625, 3.6, 224,
                (30, 80), (4, -6), 0.3, 0.35, 0.75, 0.7, 0.06),
    SiteProfile("SiteC", "coarse 0.75 mm, 4 mm slices, blurred, high contrast, off-centre",
                0.75, 4.0, 192, (20, 50), (8, 10), 0.8, 0.15, 1.4, 1.4, 0.04),
    SiteProfile("SiteD", "endorectal coil: bright flare behind the gland, distended rectum", 0.45,
                3.0, 288, (30, 90), (0, -8), 0.0, 0.20, 1.0, 0.9, 0.03, endorectal_coil=True),
    SiteProfile("SiteE", "low resolution 0.8 mm, heavy noise, large (BPH) glands", 0.8, 3.5, 176,
                (45, 90), (-6, 4), 1.0, 0.20, 0.7, 1.1, 0.09),
    SiteProfile("SiteF", "dark, steep contrast curve, shifted patient, small-to-mid glands", 0.6,
                3.3, 224, (20, 70), (-10, 6), 0.4, 0.25, 1.6, 0.5, 0.05),
)
# fmt: on

# Relative T2 signal of each tissue (brightest = urine = 1).
FAT, MUSCLE, CORTEX, MARROW, URINE = 0.82, 0.27, 0.05, 0.55, 1.0
PZ, TZ, CAPSULE, STROMA = 0.68, 0.36, 0.2, 0.42


@dataclass(frozen=True)
class PhantomCase:
    """Where one generated case was written, with its main truth parameters."""

    site: str
    case: str
    gland_ml: float
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0
) -> np.ndarray:
    """Squared normalised radius of points to an in-plane ellipse (< 1 inside)."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Smooth zero-mean unit-ish random field: coarse noise upsampled linearly."""
    coarse = rng.standard_normal((shape[0], cells, cells)).astype(np.float32)
    factors = (1.0, shape[1] / cells, shape[2] / cells)
    return zoom(coarse, factors, order=1, mode="nearest", grid_mode=True)[:, : shape[1], : shape[2]]


class _Gland:
    """Random prostate: a tapered, deformed ellipsoid with zones, centred at the origin."""

    def __init__(self, rng: np.random.Generator, volume_ml: float) -> None:
        ratios = np.array([1.0, 0.72, 0.85]) * rng.uniform(0.9, 1.1, 3)
        scale = (volume_ml * 1000.0 / (4.0 / 3.0 * np.pi * ratios.prod())) ** (1 / 3)
        self.a, self.b, self.c = ratios * scale
        self.angle = rng.uniform(-0.17, 0.17)
        self.taper = rng.uniform(0.1, 0.3)  # base wider than apex
        self.harmonics = rng.normal(0.0, 0.045, (3, 2))  # cos/sin amplitudes of k = 2, 3, 4
        self.harm_slope = rng.uniform(-0.5, 0.5)
        self.tz_fraction = rng.uniform(0.45, 0.75)
        self.tz_shift = rng.uniform(0.15, 0.3)  # TZ sits anterior (negative y)

    def set_grid(self, x: np.ndarray, y: np.ndarray) -> None:
        """Precompute the in-plane boundary deformation for the grid of every later plane."""
        theta = np.arctan2(y, x)
        self.bump = sum(
            ca * np.cos(k * theta) + sa * np.sin(k * theta)
            for k, (ca, sa) in zip((2, 3, 4), self.harmonics, strict=True)
        ).astype(np.float32)

    def level(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        """Normalised radius minus boundary deformation: gland where < 1."""
        zn = z / self.c
        widen = 1.0 + self.taper * zn
        rho2 = _ellipse(x, y, 0.0, 0.0, self.a * widen, self.b * widen, self.angle) + zn**2
        return np.sqrt(rho2) - self.bump * (1.0 + self.harm_slope * zn)

    def transition_zone(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        """Inner anterior-central ellipsoid of the transition zone (boolean)."""
        f = self.tz_fraction ** (1 / 3)
        zn = (z - 0.15 * self.c) / (self.c * f)
        rho2 = _ellipse(
            x, y, 0.0, -self.tz_shift * self.b, self.a * f * 0.9, self.b * f, self.angle
        )
        return rho2 + zn**2 < 1.0


class _Pelvis:
    """Random pelvic anatomy around a gland, in patient mm (x: R->L, y: A->P, z: I->S)."""

    def __init__(self, rng: np.random.Generator, gland: _Gland, coil: bool) -> None:
        self.gland = gland
        self.coil = coil
        self.rectum_r = rng.uniform(17, 21) if coil else rng.uniform(9, 14)
        self.rectum_y = gland.b + rng.uniform(2.0, 5.0) + self.rectum_r
        self.rectum_content = rng.choice([0.06, 0.45])  # air or stool
        self.bladder = (
            rng.uniform(-5, 5),
            -0.3 * gland.b,
            gland.c + rng.uniform(12, 22),
            rng.uniform(28, 40),
            rng.uniform(22, 32),
            rng.uniform(18, 28),
        )
        self.pubis_y = -(gland.b + rng.uniform(12, 20))
        self.obturator_x = gland.a + rng.uniform(10, 16)
        self.femur = (rng.uniform(62, 72), rng.uniform(-5, 10), rng.uniform(20, 25))

    def render(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        """T2 signal of one axial plane at height ``z`` (mm)."""
        g = self.gland
        img = np.full(x.shape, FAT, dtype=np.float32)
        img[_ellipse(x, y, 0, 10, 165, 118) > 1.0] = 0.0  # outside the body: air
        for side in (-1, 1):
            img[_ellipse(x, y, side * 60, 70, 40, 35, side * 0.4) < 1] = MUSCLE  # gluteus
            img[_ellipse(x, y, side * self.obturator_x, 0, 8, 28, side * 0.15) < 1] = MUSCLE
            if z < 0.4 * g.c:  # pubic bone, below the bladder
                rho = _ellipse(x, y, side * 9, self.pubis_y, 9, 14, side * 0.5)
                img[rho < 1] = CORTEX
                img[rho < 0.55] = MARROW
            fx, fy, fr = self.femur
            dz = z - g.c
            if abs(dz) < fr:
                r = np.sqrt(fr**2 - dz**2)
                rho = _ellipse(x, y, side * fx, fy, r, r)
                img[rho < 1] = CORTEX
                img[rho < 0.75] = MARROW
        bx, by, bz, brx, bry, brz = self.bladder
        dzb = (z - bz) / brz
        if abs(dzb) < 1:
            k = np.sqrt(1 - dzb**2)
            rho = _ellipse(x, y, bx, by, brx * k, bry * k)
            img[rho < 1] = MUSCLE
            img[rho < 0.85] = URINE
        rect = _ellipse(x, y, 0, self.rectum_y, self.rectum_r, self.rectum_r * 0.85)
        img[rect < 1] = MUSCLE
        img[rect < 0.55] = 0.3 if self.coil else self.rectum_content
        zn = z / g.c
        level = g.level(x, y, z)
        if zn < -0.2:  # levator ani / external sphincter around the apex
            img[(level < 1.45) & (level >= 1.0)] = MUSCLE * 1.1
        img[(level < 1.25) & (level >= 1.0) & (y < -0.2 * g.b)] = STROMA  # anterior stroma
        inside = level < 1.0
        gland = np.where(g.transition_zone(x, y, z), TZ, PZ).astype(np.float32)
        gland[level > 0.96] = CAPSULE
        fade = np.clip((abs(zn) - 0.55) / 0.45, 0.0, 1.0) * 0.6  # faint apex and base
        img[inside] = (1 - fade) * gland[inside] + fade * img[inside]
        img[inside & (_ellipse(x, y, 0, -0.25 * g.b, 1.5, 1.5) < 1)] = 0.55  # urethra
        return img

    def coil_sensitivity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Receive-sensitivity flare of an endorectal coil in the rectum."""
        d = np.hypot(x, y - self.rectum_y)
        return (1.0 + 3.0 * np.exp(-np.maximum(d - self.rectum_r * 0.5, 0) / 9.0)).astype(
            np.float32
        )


def generate_case(
    site: SiteProfile, seed: int, site_index: int, case_index: int
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """One phantom volume and its gland mask, (z, y, x) arrays, with spacing and origin.

    Deterministic in ``(seed, site_index, case_index)`` alone, so cases can be generated in
    any order or in parallel.
    """
    rng = np.random.default_rng([seed, site_index, case_index])
    gland = _Gland(rng, rng.uniform(*site.gland_ml))
    pelvis = _Pelvis(rng, gland, site.endorectal_coil)
    n_slices = int(round(FOV_SLAB_MM / site.slice_mm))
    centre = np.array([*site.offset_mm, 0.0]) + rng.uniform(-6, 6, 3) * [1, 1, 0.5]
    spacing = (site.spacing_mm, site.spacing_mm, site.slice_mm)
    n = site.matrix
    axis = (np.arange(n) - (n - 1) / 2) * site.spacing_mm
    x, y = np.meshgrid(axis - centre[0], axis - centre[1], indexing="xy")
    x, y = x.astype(np.float32), y.astype(np.float32)
    gland.set_grid(x, y)
    z_centres = (np.arange(n_slices) - (n_slices - 1) / 2) * site.slice_mm - centre[2]

    image = np.empty((n_slices, n, n), dtype=np.float32)
    mask = np.empty((n_slices, n, n), dtype=np.uint8)
    for k, zc in enumerate(z_centres):
        planes = [pelvis.render(x, y, zc + d * site.slice_mm) for d in SUBSLICES]
        image[k] = np.mean(planes, axis=0)
        mask[k] = gland.level(x, y, zc) < 1.0
    image *= 1.0 + 0.06 * _smooth_field(rng, image.shape, 24)
    if site.endorectal_coil:
        image *= pelvis.coil_sensitivity(x, y)[None]
    image = _acquire(image, site, int(rng.integers(2**31)))
    origin = tuple(float(v) for v in (axis[0], axis[0], z_centres[0] + centre[2]))
    return image, mask, spacing, origin


def _acquire(image: np.ndarray, site: SiteProfile, seed: int) -> np.ndarray:
    """Site-specific MRI artefacts (MONAI transforms) and conversion to MR-like int16."""
    volume = image[None]
    if site.blur_mm > 0:
        sigma = site.blur_mm / site.spacing_mm
        volume = GaussianSmooth(sigma=(0.0, sigma, sigma))(volume)
    bias = RandBiasField(degree=3, coeff_range=(-site.bias, site.bias), prob=1.0)
    bias.set_random_state(seed)
    volume = bias(volume)
    volume = AdjustContrast(gamma=site.gamma)(volume) * site.scale
    noise = RandRicianNoise(prob=1.0, std=site.noise * site.scale, sample_std=False)
    noise.set_random_state(seed + 1)
    volume = noise(volume)
    out = np.asarray(volume[0], dtype=np.float32)
    return np.clip(np.round(out * 1000.0), 0, 32767).astype(np.int16)


def _write_case(
    out_dir: Path, site: SiteProfile, seed: int, site_index: int, case_index: int
) -> PhantomCase:
    image, mask, spacing, origin = generate_case(site, seed, site_index, case_index)
    name = f"Case{case_index:02d}"
    for array, suffix in ((image, ""), (mask, "_segmentation")):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(spacing)
        volume.SetOrigin(origin)
        write_volume(volume, out_dir / site.name / f"{name}{suffix}.nii.gz")
    return PhantomCase(site.name, name, gland_ml(mask, spacing), tuple(image.shape), spacing)


def write_phantom(
    out_dir: str | Path,
    sites: int = 6,
    cases_per_site: int = 10,
    seed: int = 0,
    workers: int = 1,
    show_progress: bool = False,
) -> list[PhantomCase]:
    """Generate the benchmark into ``out_dir`` in the six-site layout.

    Args:
        out_dir: destination folder (created); must not already hold a phantom.
        sites: number of sites, 1 to ``len(SITES)``.
        cases_per_site: volumes per site.
        seed: the whole benchmark is a function of this seed.
        workers: processes to generate with (the output does not depend on it).
        show_progress: show a progress bar on stderr.

    Returns:
        One record per written case.

    Raises:
        ProkdError: impossible counts, or ``out_dir`` already holds data.
    """
    if not 1 <= sites <= len(SITES):
        raise ProkdError(f"--sites must be between 1 and {len(SITES)}, got {sites}")
    if cases_per_site < 1:
        raise ProkdError(f"--cases-per-site must be at least 1, got {cases_per_site}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProkdError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    # Generated into a temporary sibling, then renamed: never a half-written benchmark.
    with atomic_folder(out_dir) as staging:
        cases = _generate(staging, sites, cases_per_site, seed, workers, show_progress)
    return cases


def _generate(
    out_dir: Path, sites: int, cases_per_site: int, seed: int, workers: int, show_progress: bool
) -> list[PhantomCase]:
    jobs = [(out_dir, SITES[s], seed, s, c) for s in range(sites) for c in range(cases_per_site)]
    progress = tqdm(total=len(jobs), desc="phantom", unit="case", disable=not show_progress)
    cases = []
    if workers > 1:
        # spawn, not fork: forking after torch/OpenMP threads started can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for case in pool.map(_write_case, *zip(*jobs, strict=True)):
                cases.append(case)
                progress.update()
    else:
        for job in jobs:
            cases.append(_write_case(*job))
            progress.update()
    progress.close()
    info = {
        "generator": "prokd phantom",
        "seed": seed,
        "sites": [asdict(site) for site in SITES[:sites]],
        "cases": [asdict(case) for case in cases],
    }
    (out_dir / "phantom.json").write_text(json.dumps(info, indent=1))
    return cases
