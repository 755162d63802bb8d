import json

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.layouts import detect_layout, find_cases, unlabelled_cases
from prokd.errors import DataError
from tests.conftest import make_volume, write

TINY = np.zeros((2, 3, 3), np.float32)
TINY_MASK = np.zeros((2, 3, 3), np.uint8)


def _six_site_from_lists(root, lists_dir, sites):
    """Write empty tiny volumes under exactly the file names of the public six-site set."""
    expected = 0
    for site in sites:
        names = (lists_dir / f"{site}_files.txt").read_text().split()
        for name in names:
            write(root / site / name, TINY_MASK if "egmentation" in name else TINY)
        expected += sum("egmentation" not in n for n in names)
    return expected


def test_six_site_layout_with_public_file_names(tmp_path, shared_data):
    lists = shared_data / "six-site-layout"
    expected = _six_site_from_lists(tmp_path, lists, ["ISBI_1.5", "UCL"])
    assert detect_layout(tmp_path) == "six-site"
    layout, cases = find_cases(tmp_path)
    assert layout == "six-site" and len(cases) == expected
    bmc = [c for c in cases if c.site == "ISBI_1.5"]
    assert len(bmc) == 30
    assert all(
        c.masks[0].name.endswith("_Segmentation.nii.gz") and c.masks[0].exists() for c in bmc
    )
    assert all(c.masks[0].exists() for c in cases)
    assert len({c.case_id for c in cases}) == len(cases)


def test_six_site_ids_are_unique_across_sites(tmp_path):
    for site in ("A", "B"):
        write(tmp_path / site / "Case00.nii.gz", TINY)
        write(tmp_path / site / "Case00_segmentation.nii.gz", TINY_MASK)
    _, cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["A/Case00", "B/Case00"]


def test_six_site_image_without_mask_points_at_expected_mask(tmp_path):
    write(tmp_path / "S" / "Case00.nii.gz", TINY)
    write(tmp_path / "S" / "Case01.nii.gz", TINY)
    write(tmp_path / "S" / "Case01_segmentation.nii.gz", TINY_MASK)
    _, cases = find_cases(tmp_path, "six-site")
    assert cases[0].masks[0].name == "Case00_segmentation.nii.gz"
    assert not cases[0].masks[0].exists()


def test_msd_layout(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    entries = []
    for i in (3, 7):
        image = np.zeros((2, 2, 3, 3), np.float32)
        import SimpleITK as sitk

        sitk.WriteImage(
            sitk.GetImageFromArray(image), str(tmp_path / "imagesTr" / f"prostate_{i:02d}.nii.gz")
        )
        write(tmp_path / "labelsTr" / f"prostate_{i:02d}.nii.gz", TINY_MASK)
        entries.append(
            {
                "image": f"./imagesTr/prostate_{i:02d}.nii.gz",
                "label": f"./labelsTr/prostate_{i:02d}.nii.gz",
            }
        )
    (tmp_path / "dataset.json").write_text(json.dumps({"training": entries, "test": []}))
    layout, cases = find_cases(tmp_path)
    assert layout == "msd"
    assert [c.case_id for c in cases] == ["prostate_03", "prostate_07"]
    assert all(c.image_channel == 0 and c.allowed_labels == {0, 1, 2} for c in cases)


def test_msd_bad_dataset_json(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: not a valid MSD dataset.json"):
        find_cases(tmp_path)


def test_promise12_layout(tmp_path):
    for i in (0, 1):
        write(tmp_path / f"Case{i:02d}.mhd", TINY)
        write(tmp_path / f"Case{i:02d}_segmentation.mhd", TINY_MASK)
    layout, cases = find_cases(tmp_path)
    assert layout == "promise12"
    assert [c.case_id for c in cases] == ["Case00", "Case01"]
    assert all(c.masks[0].exists() for c in cases)


def test_prostate158_layout_with_second_reader(tmp_path):
    write(tmp_path / "001" / "t2.nii.gz", TINY)
    write(tmp_path / "001" / "t2_anatomy_reader1.nii.gz", TINY_MASK)
    write(tmp_path / "001" / "t2_anatomy_reader2.nii.gz", TINY_MASK)
    write(tmp_path / "020" / "t2.nii.gz", TINY)
    write(tmp_path / "020" / "t2_anatomy_reader1.nii.gz", TINY_MASK)
    layout, cases = find_cases(tmp_path)
    assert layout == "prostate158"
    assert [len(c.masks) for c in cases] == [2, 1]
    assert cases[0].allowed_labels == {0, 1, 2}


def test_real_prostate158_is_detected(shared_data):
    layout, cases = find_cases(shared_data / "real" / "prostate158")
    assert layout == "prostate158"
    assert [c.case_id for c in cases] == ["001", "002", "020"]


def test_unknown_layout_and_missing_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no known dataset layout"):
        find_cases(tmp_path)
    with pytest.raises(DataError, match="unknown layout 'bids'"):
        find_cases(tmp_path, "bids")
    with pytest.raises(DataError, match="data folder not found"):
        find_cases(tmp_path / "nope")


def test_forced_layout_without_cases(tmp_path):
    with pytest.raises(DataError, match="no cases found for layout 'promise12'"):
        find_cases(tmp_path, "promise12")


def test_unlabelled_cases_of_a_plain_folder_skip_masks(tmp_path):
    volume = np.zeros((2, 4, 4), np.float32)
    for name in ("a.nii.gz", "sub/b.mha", "sub/b_mask.nii.gz", "labelsTr/c.nii.gz"):
        write(tmp_path / "scans" / name, volume)
    cases = unlabelled_cases(tmp_path / "scans")
    assert [(c.case_id, c.site, c.masks) for c in cases] == [
        ("scans/a", "scans", ()),
        ("scans/sub/b", "scans", ()),
    ]
    assert not any(c.labelled for c in cases)
    with pytest.raises(DataError, match="no image volumes"):
        unlabelled_cases(tmp_path / "scans" / "labelsTr")
    with pytest.raises(DataError, match="folder not found"):
        unlabelled_cases(tmp_path / "missing")


def test_unlabelled_cases_of_a_known_layout_drop_its_masks(tmp_path):
    volume = np.zeros((2, 4, 4), np.float32)
    for site in ("S1", "S2"):
        write(tmp_path / "six" / site / "Case00.nii.gz", volume)
        write(tmp_path / "six" / site / "Case00_segmentation.nii.gz", volume.astype(np.uint8))
    cases = unlabelled_cases(tmp_path / "six")
    assert [(c.case_id, c.site) for c in cases] == [
        ("six/S1/Case00", "S1"),
        ("six/S2/Case00", "S2"),
    ]
    assert all(c.masks == () for c in cases)


def test_a_flat_export_of_two_studies_gives_two_readable_cases(tmp_path):
    """Two studies in one folder (a flat PACS export) are two cases, each read as its own
    series and keyed by all of that series' files (it was one folder refused as '2 studies
    in one folder')."""
    from prokd.data.dicom_write import StudyIdentity, write_series
    from prokd.data.io import read_volume, volume_sha256
    from prokd.data.layouts import dicom_cases

    flat = tmp_path / "export"
    images = {}
    for number, patient in ((1, "A"), (2, "B")):
        array = np.full((4, 8, 10), 100 * number, np.int16)
        images[patient] = make_volume(array)
        write_series(images[patient], flat, StudyIdentity.named(patient), number=number)
    cases = dicom_cases(flat)
    assert len({case.case_id for case in cases}) == 2
    assert {case.group for case in cases} == {"export/A", "export/B"}
    for case in cases:
        patient = case.group.split("/")[-1]
        read = sitk.GetArrayFromImage(read_volume(case.image))
        np.testing.assert_array_equal(read, sitk.GetArrayFromImage(images[patient]))
    digest = volume_sha256(cases[0].image)
    (flat / "IM1_0003.dcm").unlink()  # a slice of the first series goes
    assert volume_sha256(cases[0].image) != digest
