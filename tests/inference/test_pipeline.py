"""Prediction as one straight line: ``prokd.segment`` on a path enters each stage once, in
order, and the stages' composition is what ``prokd predict`` writes."""

import numpy as np
import SimpleITK as sitk

import prokd.inference.pipeline as pipeline
from prokd.cli import main

STAGES = (
    "read_stage",
    "axial_stage",
    "locate_stage",
    "grid_stage",
    "infer_stage",
    "back_stage",
    "qc_stage",
)


def test_segment_on_a_path_enters_each_stage_once_in_order(phantom_study, monkeypatch, tmp_path):
    import prokd

    calls = []
    for name in STAGES:
        stage = getattr(pipeline, name)

        def wrapper(*args, _stage=stage, _name=name, **kwargs):
            calls.append(_name)
            return _stage(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, wrapper)
    result = prokd.segment(phantom_study.folder)
    assert calls == list(STAGES)
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "prostate-t2", str(phantom_study.folder), str(out)]) == 0
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(result.mask), sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    )


def test_a_volume_stored_in_another_axis_order_is_reoriented_once(phantom_study, monkeypatch):
    """The axial view is computed once, in the axial stage; later stages read it (the mask
    and probabilities each go back to the file's own axes once)."""
    import prokd

    flipped = sitk.Flip(phantom_study.image, [True, False, True])  # stored R-L and S-I
    orient, targets = sitk.DICOMOrient, []

    def counted(image, code):
        targets.append(code)
        return orient(image, code)

    monkeypatch.setattr(sitk, "DICOMOrient", counted)
    result = prokd.segment(flipped)
    assert targets.count("LPS") == 1 and len(targets) == 3
    unflipped = prokd.segment(phantom_study.image).mask
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.Flip(result.mask, [True, False, True])),
        sitk.GetArrayFromImage(unflipped),
    )


def test_the_grid_stage_places_on_the_located_gland(phantom_study):
    from prokd.data.placement import axial_stage
    from prokd.inference.model_files import load_model_file

    settings = load_model_file("prostate-t2").settings
    volume = axial_stage(phantom_study.image)
    assert volume.plane == "axial" and volume.source is volume.axial
    location = pipeline.locate_stage(volume, settings)
    assert location is not None and location.found
    stack = pipeline.located_grid(volume, settings, location)
    first, last = location.slices
    assert len(stack.slices) <= last - first + 1
    centre = np.array(stack.grid.origin) + (np.array(stack.grid.size) - 1) / 2 * np.array(
        stack.grid.spacing
    )
    assert np.allclose(centre[:2], location.centre[:2], atol=stack.grid.spacing[0])
