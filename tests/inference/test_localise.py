"""The bundled localiser over large fields of view, a localiser named by
``preprocess.localiser``, and the reliability verdict on constructed failures."""

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.phantom import SITES, generate_case
from prokd.data.preprocess import PreprocessSettings, target_grid
from prokd.data.synth_pelvis import PROSTATE, synthesise
from prokd.errors import ConfigError
from prokd.evaluation.metrics import dice_score
from prokd.inference.bundled import bundled_path
from prokd.inference.localise import SLICE_MARGIN_MM, ModelLocator, locate_gland
from prokd.inference.model_files import load_model_file
from prokd.inference.pipeline import place, segment_image
from prokd.inference.reliability import assess
from prokd.inference.segment import with_crop_centre
from tests.conftest import make_volume


def _in_a_wide_field(small, small_mask, offset_mm, fov_mm=400.0, slices=200, slice_mm=1.25):
    """A volume placed off-centre (by ``offset_mm``) in a ``fov_mm`` x ``fov_mm`` x
    ``slices`` field of 1 mm pixels filled with air, its gland mask there, and the
    physical centre of the gland."""
    centre = np.array(
        small.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in small.GetSize()])
    )
    size = int(fov_mm)
    extent = np.array([size, size, slices * slice_mm])
    wide = sitk.Image([size, size, slices], sitk.sitkFloat32)
    wide.SetSpacing((1.0, 1.0, slice_mm))
    wide.SetOrigin(tuple(float(v) for v in centre - np.array(offset_mm) - extent / 2))
    # Low-passed to the new pixels first, as a scanner acquiring them would see it.
    variances = [max(0.0, (1.0 - s**2) / 4) if s < 1.0 else 0.0 for s in small.GetSpacing()]
    smooth = sitk.DiscreteGaussian(sitk.Cast(small, sitk.sitkFloat32), variances)
    placed = sitk.Resample(smooth, wide, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    gland = sitk.Resample(small_mask, wide, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(gland) > 0
    z, y, x = np.argwhere(array).mean(axis=0)
    truth = np.array(wide.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z))))
    return placed, array, truth


def _phantom_in_a_wide_field(offset_mm):
    """An unseen phantom case (seed 7) in a 400 mm, 200-slice field."""
    image, mask, spacing, origin = generate_case(SITES[0], seed=7, site_index=0, case_index=3)
    small = make_volume(image.astype(np.float32), spacing, origin)
    return _in_a_wide_field(small, make_volume(mask, spacing, origin), offset_mm)


def test_the_localiser_finds_an_off_centre_phantom_gland_in_a_400_mm_200_slice_field():
    """Found within 20 mm (four of the localiser's 5 mm pixels; the image centre is 150 mm
    away), every gland slice kept, and the fine 128 mm grid centred there holds the whole
    gland with 10 mm to spare."""
    wide, gland, truth = _phantom_in_a_wide_field(offset_mm=(110.0, -90.0, 60.0))
    assert wide.GetSize() == (400, 400, 200)
    location = locate_gland(wide)
    assert location.found
    assert np.linalg.norm(np.array(location.centre) - truth) < 20.0
    occupied = np.flatnonzero(gland.reshape(len(gland), -1).any(axis=1))
    first, last = location.slices
    assert first <= occupied[0] and last >= occupied[-1]  # every gland slice is segmented
    assert last - first < len(occupied) + 2 * (SLICE_MARGIN_MM / 1.25) + 20  # not all 200
    grid = target_grid(wide, PreprocessSettings(crop_centre="gland"), location.centre)
    reference = grid.apply_to(sitk.Image(grid.size, sitk.sitkUInt8))
    voxels = np.argwhere(gland)[:, ::-1].astype(float)  # x, y, z indices of the gland
    points = np.array([wide.TransformContinuousIndexToPhysicalPoint(v) for v in voxels[::50]])
    inside = np.array([reference.TransformPhysicalPointToContinuousIndex(p) for p in points])
    assert inside[:, :2].min() >= 10.0 and inside[:, :2].max() <= grid.size[0] - 1 - 10.0


def test_the_bundled_model_finds_a_real_gland_off_centre_in_a_wide_field(shared_data):
    """A real scan placed 140 mm off-centre in a 400 mm, 80-slice field of air: the image
    centre misses the gland, the localiser's placement segments it."""
    case = shared_data / "real/prostate158/002"
    small = sitk.ReadImage(str(case / "t2.nii.gz"))
    small_mask = sitk.ReadImage(str(case / "t2_anatomy_reader1.nii.gz")) > 0
    wide, gland, _ = _in_a_wide_field(small, small_mask, (110.0, -90.0, 12 * 3.15), 400.0, 80, 3.15)
    model = load_model_file(bundled_path("prostate-t2"))
    placed = segment_image(with_crop_centre(model, "gland"), wide)
    centred = segment_image(with_crop_centre(model, "image"), wide)
    assert placed.mask.shape == gland.shape
    assert dice_score(placed.mask > 0, gland) > 0.75
    assert dice_score(centred.mask > 0, gland) < 0.3


def _body_image(shape=(20, 120, 120), spacing=(3.0, 2.0, 2.0)):
    """An axial volume of a bright elliptic body centred in-plane, on a dark background."""
    z, y, x = np.indices(shape)
    body = ((y - 60) / 45.0) ** 2 + ((x - 60) / 55.0) ** 2 < 1
    rng = np.random.default_rng(0)
    array = np.where(body, 500.0, 10.0) + rng.normal(0, 5, shape)
    return make_volume(array.astype(np.float32), spacing=tuple(reversed(spacing)))


def test_a_confident_mask_far_from_the_body_midline_is_unreliable():
    image = _body_image()
    mask = np.zeros(image.GetSize()[::-1], np.uint8)
    mask[6:14, 50:70, 92:108] = 1  # 40-ish mm lateral of the midline, in a "hip"
    probabilities = mask.astype(np.float32)
    verdict = assess(mask, probabilities, probabilities, None, image)
    assert not verdict.reliable
    assert any("off the body's midline" in r for r in verdict.reasons)
    assert verdict.signals["midline_offset_mm"] > 60
    central = np.zeros_like(mask)
    central[6:14, 50:70, 52:68] = 1
    ok = assess(central, central.astype(np.float32), central.astype(np.float32), None, image)
    assert ok.reliable and ok.reasons == [] and ok.signals["midline_offset_mm"] < 5


def test_a_slab_that_cuts_the_body_on_both_sides_shows_no_midline():
    """A 60 mm sagittal slab resliced to axial, 40 mm left of the midline: the body's centre
    in view is the slab's, so the midline is not measured (it once read 0 mm here)."""
    image = _body_image()
    slab = image[70:100, :, :]  # x 140-200 mm of a body centred at 120 mm
    mask = np.zeros(slab.GetSize()[::-1], np.uint8)
    mask[6:14, 50:70, 10:20] = 1
    ones = mask.astype(np.float32)
    assert assess(mask, ones, ones, None, slab).signals["midline_offset_mm"] is None
    whole = np.zeros(image.GetSize()[::-1], np.uint8)
    whole[6:14, 50:70, 80:90] = 1  # the same voxels, in the whole view
    signals = assess(whole, whole.astype(np.float32), whole.astype(np.float32), None, image)
    assert signals.signals["midline_offset_mm"] == pytest.approx(50, abs=3)


def test_disagreeing_mirror_and_uncertain_masks_are_unreliable():
    image = _body_image()
    mask = np.zeros(image.GetSize()[::-1], np.uint8)
    mask[6:14, 50:70, 52:68] = 1
    elsewhere = np.roll(mask, 12, axis=2).astype(np.float32)
    verdict = assess(mask, mask * 0.55, elsewhere, None, image)
    assert not verdict.reliable
    text = " ".join(verdict.reasons)
    assert "mirrored image gives another mask" in text and "uncertain voxels" in text


@pytest.mark.parametrize("part", ["thighs", "abdomen"])
def test_a_gland_free_field_of_view_is_marked_unreliable(shared_data, part):
    """A whole pelvis synthesised from a HipMRI label map, cut to the slices 15 mm or more
    below the gland (thighs) or above it (bladder and abdomen): whatever the model finds
    there is not a gland, and the QC says so. A featureless volume too."""
    path = shared_data / "hipmri-labels" / "Case_004_Week0_SEMANTIC_LFOV.nii.gz"
    reference = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(reference)
    spacing = tuple(reversed(reference.GetSpacing()))
    image = sitk.GetImageFromArray(synthesise(labels, spacing, seed=5))
    image.CopyInformation(reference)
    gland_slices = np.flatnonzero((labels == PROSTATE).reshape(len(labels), -1).any(axis=1))
    margin = int(np.ceil(15.0 / spacing[0]))
    if part == "thighs":
        image = image[:, :, : gland_slices[0] - margin]
    else:
        image = image[:, :, gland_slices[-1] + margin :]
    model = with_crop_centre(load_model_file(bundled_path("prostate-t2")), "gland")
    result = segment_image(model, image)
    assert not result.qc.reliable and result.qc.reasons
    empty = make_volume(np.full((12, 64, 64), 7.0, np.float32))
    flat = segment_image(model, empty)
    assert not flat.qc.reliable


@pytest.mark.parametrize("series, plane", [("3", "sagittal"), ("5", "coronal")])
def test_a_non_axial_series_gets_a_mask_on_its_own_grid(shared_data, series, plane):
    """ProstateX-0000's sagittal and coronal T2 series: the mask is on the series' own
    grid and agrees with the AI reference of the axial series resampled onto the series
    (Dice 0.701 sagittal, 0.586 coronal in benchmarks/results/non_axial.md)."""
    from prokd.data.dicom import read_series, series_at

    study = shared_data / "dicom" / "ProstateX" / "ProstateX-0000"
    image = read_series(series_at(study, series))
    model = with_crop_centre(load_model_file(bundled_path("prostate-t2")), "gland")
    result = segment_image(model, image)
    assert result.qc.plane == plane
    assert result.mask.shape == tuple(reversed(image.GetSize()))
    reference = sitk.ReadImage(
        str(shared_data / "ai-references/prostatex/ProstateX-0000/gland_bosma22b.nii.gz")
    )
    on_series = sitk.Resample(reference, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    agreement = dice_score(result.mask > 0, sitk.GetArrayFromImage(on_series) > 0)
    assert result.mask.sum() > 1000 and agreement > 0.5, (agreement, result.qc.reasons)


@pytest.mark.parametrize("plane", ["sagittal", "coronal"])
def test_a_phantom_series_of_another_plane_gets_a_mask_on_its_own_grid(plane):
    """The phantom as a sagittal or a coronal series (no real scan needed): the mask is on
    the series' grid and finds the gland (Dice 0.81 sagittal, 0.77 coronal when written;
    0.68 on the axial phantom itself)."""
    from tests.conftest import phantom_in_plane

    image, gland = phantom_in_plane(plane)
    model = with_crop_centre(load_model_file(bundled_path("prostate-t2")), "gland")
    result = segment_image(model, image)
    assert result.qc.plane == plane
    assert result.mask.shape == tuple(reversed(image.GetSize()))
    assert dice_score(result.mask > 0, sitk.GetArrayFromImage(gland) > 0) >= 0.65


def _blind_localiser(folder):
    """A localiser checkpoint (run folder) with the bundled one's settings that never finds
    a gland: every weight zero, the output bias for background."""
    import torch

    from prokd.inference.trained import BEST, model_payload
    from prokd.models import build_model

    settings = load_model_file(bundled_path("prostate-localiser")).settings
    network = build_model("unet-w4", settings.channels, 2)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        last_bias = [p for name, p in network.named_parameters() if name.endswith("bias")][-1]
        last_bias.copy_(torch.tensor([10.0, -10.0]))
    folder.mkdir()
    torch.save(model_payload(network, "unet-w4", settings), folder / BEST)
    return folder


def test_preprocess_localiser_names_the_model_that_places_the_grid(tmp_path):
    wide, _, _ = _phantom_in_a_wide_field(offset_mm=(110.0, -90.0, 60.0))
    bundled = place(wide, PreprocessSettings(crop_centre="gland"))
    assert bundled.location.found
    copied = tmp_path / "copy.onnx"
    shutil.copyfile(bundled_path("prostate-localiser"), copied)
    same = place(wide, PreprocessSettings(crop_centre="gland", localiser=str(copied)))
    np.testing.assert_allclose(same.location.centre, bundled.location.centre)
    blind = _blind_localiser(tmp_path / "blind")
    other = place(wide, PreprocessSettings(crop_centre="gland", localiser=str(blind)))
    assert not other.location.found  # the grid falls back to the image centre
    # The training cache keys placements by the localiser file's contents.
    assert ModelLocator(str(copied)).fingerprint == ModelLocator().fingerprint
    assert ModelLocator(str(blind)).fingerprint != ModelLocator().fingerprint


def test_a_missing_localiser_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nowhere.onnx")
    with pytest.raises(ConfigError, match="preprocess.localiser: .*nowhere.onnx"):
        ModelLocator(missing)
    with pytest.raises(ConfigError, match="preprocess.localiser: .*nowhere.onnx"):
        place(_body_image(), PreprocessSettings(crop_centre="gland", localiser=missing))
    with pytest.raises(ConfigError, match="preprocess.localiser must be"):
        PreprocessSettings(localiser="")


def test_the_default_localiser_keeps_earlier_cache_keys():
    gland = PreprocessSettings(crop_centre="gland")
    assert "localiser" not in gland.fingerprint()
    other = PreprocessSettings(crop_centre="gland", localiser="fold.onnx")
    assert "fold.onnx" in other.fingerprint()
    assert other.grid_only().localiser == "fold.onnx"
