"""Shared test helpers: tiny volumes written to disk with chosen geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from prokd.data.cache import PreprocessedVolume
from prokd.data.io import Geometry
from prokd.data.preprocess import PreprocessSettings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_EXPERIMENT = {
    "preprocess": {"size": 32, "fov_mm": 128.0},
    "split": {"val_fraction": 0.0, "test_fraction": 0.5},
    "train": {"epochs": 1, "batch_size": 8, "slices_per_epoch": 8},
}
FLIPPED = (-1, 0, 0, 0, 1, 0, 0, 0, 1)  # a direction that is not RAS: models must reorient


def assert_same_grid(mask: sitk.Image, image: sitk.Image) -> None:
    """A predicted mask is uint8 0/1 on exactly the image's grid."""
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}


def make_volume(
    array: np.ndarray,
    spacing=(0.5, 0.5, 3.0),
    origin=(0.0, 0.0, 0.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> sitk.Image:
    """A SimpleITK image of a (z, y, x) array with the given geometry."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


def write(path: Path, array: np.ndarray, **geometry) -> Path:
    """Write a (z, y, x) array as a volume file with the given geometry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(make_volume(array, **geometry), str(path))
    return path


def ball_case(shape=(6, 16, 16), radius=5.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright ball and the ball's mask, (z, y, x)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = (np.array(shape) - 1) / 2
    dist = np.sqrt(((z - centre[0]) * 3) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    mask = (dist < radius).astype(np.uint8)
    image = (100 + 50 * mask + rng.normal(0, 5, shape)).astype(np.float32)
    return image, mask


def tiny_phantom(folder: Path, sites: int, cases_per_site: int, seed: int) -> Path:
    """A small synthetic benchmark in the six-site layout under ``folder``."""
    from prokd.data.phantom import write_phantom

    root = folder / "six-site"
    write_phantom(root, sites=sites, cases_per_site=cases_per_site, seed=seed)
    return root


@pytest.fixture
def shared_data() -> Path:
    """The read-only real data folder; skips the test when it is not beside the project."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


# A 3D ONNX volume model made here: voxel-wise, so its output is known in closed form.


def export_scaling_model(path, weight: float, bias: float, channels: int = 1):
    """A 1x1x1 Conv3d exported to ONNX: channel c's logit = (c + 1) * weight * intensity +
    bias (one channel: weight * intensity + bias)."""
    import torch

    model = torch.nn.Conv3d(1, channels, 1)
    with torch.no_grad():
        for c in range(channels):
            model.weight[c].fill_((c + 1) * weight)
        model.bias.fill_(bias)
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 8, 8, 4),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
        dynamo=False,
    )
    return path


def volume_model_file(tmp_path, weight=0.02, bias=-1.0, channels=1, **preprocessing):
    """A YAML file declaring :func:`export_scaling_model`'s ONNX file and its preprocessing."""
    model = export_scaling_model(tmp_path / "scale.onnx", weight, bias, channels)
    values = {
        "onnx": model.name,
        "spacing_mm": [0.5, 0.5, 3.0],
        "normalise": "none",
        "roi_size": [16, 16, 4],
        "blend": "constant",
        **preprocessing,
    }
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def intensities(shape=(5, 12, 10), seed=0):
    """A random volume of intensities in [0, 100)."""
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


# Tiny training jobs and experiments, shared by the training, evaluation and distillation tests.


SLICE_SETTINGS = PreprocessSettings(size=32, fov_mm=32.0)
GRID = Geometry((32, 32, 4), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def slice_volume(seed):
    """A preprocessed 4-slice 32x32 volume: a noisy bright square and its mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((4, 32, 32), np.uint8)
    r = rng.integers(6, 10)
    mask[1:3, 16 - r : 16 + r, 14 - r : 14 + r] = 1
    image = (rng.normal(0, 0.5, mask.shape) + 1.5 * mask).astype(np.float32)
    return PreprocessedVolume(f"c{seed}", "S", image, mask, GRID)


def tiny_job(run_dir, epochs=3, teachers=(), weighting="uniform", augment=True, model="unet-w4"):
    """A training job on three tiny volumes (one more validates), 32x32 slices."""
    from prokd.training.config import config_from_dict
    from prokd.training.job import TrainJob

    config = config_from_dict(
        {
            "preprocess": {"size": 32, "fov_mm": 32.0},
            "train": {
                "epochs": epochs,
                "batch_size": 4,
                "slices_per_epoch": 8,
                "augment": augment,
                "patience": 10,
                "seed": 3,
            },
        }
    )
    return TrainJob.from_config(
        config,
        run_dir,
        [slice_volume(i) for i in range(3)],
        [slice_volume(10)],
        model=model,
        teachers=list(teachers),
        weighting=weighting,
    )


def tiny_experiment(config, tmp_path, **experiment):
    """``config`` shrunk to 32x32 slices, one epoch of 8 slices, its cache under ``tmp_path``."""
    config = config.replace(data={"cache_dir": str(tmp_path / "cache")}, **TINY_EXPERIMENT)
    return config.replace(experiment=experiment) if experiment else config


def tiny_demo(tmp_path, teacher="unet-w4"):
    """The demo protocol with tiny networks, one limit-trained teacher per site, every
    strategy, all training cases labelled and the same training for every model."""
    from prokd.training.config import load_config

    demo = load_config(CONFIGS / "kd-benchmark.yaml").replace(
        split={"labelled_per_site": 0}, train={"augment": False}
    )
    return tiny_experiment(
        demo,
        tmp_path,
        teacher=teacher,
        limit_teacher="unet-w4",
        student="unet-w4",
        limit_mode="site",
        strategies=("uniform", "validation", "confidence", "label-aware"),
        teacher_epochs=0,
        student_epochs=0,
        student_augment=None,
    )


# DICOM studies written from phantom volumes (prokd.data.dicom_write): the DICOM, SEG,
# RTSTRUCT and node tests run on them where ../shared/data is absent.


@dataclass(frozen=True)
class PhantomStudy:
    """A DICOM study of one phantom volume: ``folder/t2`` holds its axial T2 series."""

    folder: Path
    image: sitk.Image
    mask: np.ndarray  # the phantom's gland, (z, y, x)

    @property
    def files(self) -> list[Path]:
        return sorted((self.folder / "t2").glob("*.dcm"))


def phantom_volume(case_index: int = 0) -> tuple[sitk.Image, np.ndarray]:
    """A SiteA phantom volume (256x256x28 at 0.5x0.5x3 mm) and its gland mask."""
    from prokd.data.phantom import SITES, generate_case

    array, mask, spacing, origin = generate_case(SITES[0], 0, 0, case_index)
    return make_volume(array, spacing=spacing, origin=origin), mask


def write_phantom_study(
    folder: Path, patient_id: str = "PHANTOM-0", case_index: int = 0, **series
) -> PhantomStudy:
    """A phantom volume written as a DICOM study under ``folder`` (``series``: options of
    :func:`prokd.data.dicom_write.write_series`)."""
    from prokd.data.dicom_write import StudyIdentity, write_series

    image, mask = phantom_volume(case_index)
    write_series(image, folder / "t2", StudyIdentity.named(patient_id), **series)
    return PhantomStudy(folder, image, mask)


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory) -> PhantomStudy:
    """One phantom DICOM study, written once per test session (read-only for tests)."""
    return write_phantom_study(tmp_path_factory.mktemp("phantom-study"))


# The phantom as a sagittal or coronal series would hold it: 0.5 mm pixels, 3 mm slices.
PLANE_GRIDS = {  # direction (voxel x, y, z as columns) and origin offset (L, P, S) in mm
    "sagittal": ((0, 0, 1, 1, 0, 0, 0, -1, 0), (-43.5, -60.0, 42.0)),  # x P, y -S, z L
    "coronal": ((1, 0, 0, 0, 0, 1, 0, -1, 0), (-60.0, -43.5, 42.0)),  # x L, y -S, z P
}


def phantom_in_plane(plane: str, case_index: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """The phantom volume (linear) and its gland (nearest neighbour) resampled onto a
    sagittal or coronal grid of 240x168 pixels at 0.5 mm and 30 slices 3 mm apart, centred
    on the phantom's field of view."""
    image, mask = phantom_volume(case_index)
    gland = sitk.GetImageFromArray(mask)
    gland.CopyInformation(image)
    direction, offset = PLANE_GRIDS[plane]
    grid = sitk.Image([240, 168, 30], sitk.sitkFloat32)
    grid.SetSpacing((0.5, 0.5, 3.0))
    grid.SetDirection(direction)
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([127.5, 127.5, 13.5]))
    grid.SetOrigin(tuple(float(v) for v in centre + offset))
    return tuple(
        sitk.Resample(volume, grid, sitk.Transform(), kind, 0.0, volume.GetPixelID())
        for volume, kind in ((image, sitk.sitkLinear), (gland, sitk.sitkNearestNeighbor))
    )


REAL_STUDY = "dicom/ProstateX/ProstateX-0000"  # the real DICOM study of ../shared/data


def dicom_study(request: pytest.FixtureRequest, which: str) -> Path:
    """A DICOM study folder: the phantom's (``phantom``), or the real ProstateX-0000 one
    (``prostatex``; skips where ../shared/data is absent)."""
    if which == "phantom":
        return request.getfixturevalue("phantom_study").folder
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA / REAL_STUDY
