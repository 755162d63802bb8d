"""Multi-source data configs: several folders, each with its own layout, site and labels."""

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from prokd.cli import main
from prokd.errors import ConfigError
from prokd.training.config import config_from_dict
from prokd.training.runs import prepare_data
from tests.conftest import ball_case, write


def _six_site(root, sites, cases):
    for site in sites:
        for i in range(cases):
            image, mask = ball_case(seed=i)
            write(root / site / f"Case{i:02d}.nii.gz", image)
            write(root / site / f"Case{i:02d}_segmentation.nii.gz", mask)
    return root


def _config(tmp_path):
    _six_site(tmp_path / "a", ["S1"], 3)
    _six_site(tmp_path / "b", ["S1", "S2"], 3)
    write(tmp_path / "scans" / "p1" / "t2.nii.gz", ball_case(seed=9)[0])
    write(tmp_path / "scans" / "p1" / "t2_mask.nii.gz", ball_case(seed=9)[1])
    four_d = np.stack([ball_case(seed=8)[0]] * 2)  # (channel, z, y, x) as MSD stores it
    (tmp_path / "msd_ts").mkdir()
    image = sitk.GetImageFromArray(four_d, isVector=False)
    sitk.WriteImage(image, str(tmp_path / "msd_ts" / "prostate_01.nii.gz"))
    return {
        "data": {
            "cache_dir": str(tmp_path / "cache"),
            "sources": [
                {"root": str(tmp_path / "a"), "site": "alpha"},
                {"root": str(tmp_path / "b"), "layout": "six-site"},
                {"root": str(tmp_path / "scans"), "labelled": False},
                {"root": str(tmp_path / "msd_ts"), "labelled": False, "channel": 0},
            ],
        },
        "split": {"val_fraction": 0.0, "test_fraction": 0.34},
    }


def test_sources_combine_layouts_sites_and_unlabelled_folders(tmp_path):
    data = prepare_data(config_from_dict(_config(tmp_path)))
    assert data.layout == "sources"
    assert sorted({(c.site, c.case_id.split("/")[0]) for c in data.cases}) == [
        ("S1", "S1"),
        ("S2", "S2"),
        ("alpha", "alpha"),
    ]
    assert len(data.cases) == 9 and all(c.labelled for c in data.cases)
    assert [(c.case_id, c.site, c.labelled) for c in data.unlabelled] == [
        ("scans/p1/t2", "scans", False),
        ("msd_ts/prostate_01", "msd_ts", False),
    ]
    # splits stay per site and by patient; unlabelled volumes are never split
    split_ids = set(data.split.train + data.split.val + data.split.test)
    assert split_ids == {c.case_id for c in data.cases}
    volumes = data.unlabelled_volumes()
    assert [v.labelled for v in volumes] == [False, False]
    assert volumes[1].image.shape[0] > 0 and not volumes[1].mask.any()


def test_inspect_takes_a_multi_source_config(tmp_path, capsys):
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout: sources" in out and "cases per site: S1 3, S2 3, alpha 3, msd_ts 1" in out
    assert "scans/p1/t2" in out and "unlabelled" in out and "11 of 11 cases usable" in out


def test_colliding_case_ids_and_missing_labelled_data_are_refused(tmp_path):
    values = _config(tmp_path)
    values["data"]["sources"][0] = {"root": str(tmp_path / "b")}  # same ids as source 2
    with pytest.raises(ConfigError, match="comes from two folders"):
        prepare_data(config_from_dict(values))
    only_unlabelled = {"data": {"sources": [{"root": str(tmp_path / "scans"), "labelled": False}]}}
    with pytest.raises(ConfigError, match="labelled data.sources entry"):
        prepare_data(config_from_dict(only_unlabelled))
    with pytest.raises(ConfigError, match=r"data.sources\[0\].root: missing"):
        config_from_dict({"data": {"sources": [{"site": "x"}]}})
    with pytest.raises(ConfigError, match=r"data.sources\[0\].layout: unknown layout"):
        config_from_dict({"data": {"sources": [{"root": "x", "layout": "nope"}]}})


def test_leave_one_case_out_over_sources(tmp_path):
    values = _config(tmp_path)
    values["split"] = {"val_fraction": 0.34, "test_case": "alpha/S1/Case01"}
    data = prepare_data(config_from_dict(values))
    assert data.split.test == ("alpha/S1/Case01",)
    assert len(data.split.train) + len(data.split.val) == 8
    values["split"]["test_site"] = "S2"
    with pytest.raises(ConfigError, match="test_site or test_case, not both"):
        prepare_data(config_from_dict(values))


class _CountingTeacher:
    """A volume teacher that says every voxel is gland at 0.7 and remembers its inputs."""

    name = "counting"
    threshold = 0.5

    def __init__(self):
        self.shapes = []

    def fingerprint(self) -> str:
        return "counting-teacher"

    def probabilities(self, image: sitk.Image) -> np.ndarray:
        self.shapes.append(image.GetSize())
        return np.full(sitk.GetArrayFromImage(image).shape, 0.7, np.float32)


def test_a_mask_as_teacher_source_stands_its_masks_in_for_volume_teachers(tmp_path):
    """Synthetic images with exact masks: the teacher never runs on them, and their maps are
    their masks; the other sources' volumes still get the teacher's probabilities."""
    values = _config(tmp_path)
    values["data"]["sources"][0]["mask_as_teacher"] = True  # alpha: 3 cases
    data = prepare_data(config_from_dict(values))
    assert data.mask_teachers == {f"alpha/S1/Case0{i}" for i in range(3)}
    teacher = _CountingTeacher()
    alpha = [c.case_id for c in data.cases if c.case_id.startswith("alpha/")]
    for volume in data.with_teacher_maps(data.volumes(alpha), [teacher, teacher]):
        assert volume.mask.any() and len(volume.teacher_maps) == 2
        for gland in volume.teacher_maps:
            np.testing.assert_array_equal(gland, volume.mask.astype(np.float32))
    assert teacher.shapes == []  # never run on the synthetic source
    others = [c.case_id for c in data.cases if not c.case_id.startswith("alpha/")]
    for volume in data.with_teacher_maps(data.volumes(others), [teacher]):
        assert volume.teacher_maps[0].max() == pytest.approx(0.7, abs=1e-3)  # cached as float16
    assert teacher.shapes  # run on the other sources (once per distinct image: cached)
    # Held back as unlabelled (no mask to stand in), a case of that source meets the teacher.
    held = data.volumes(["alpha/S1/Case00"])[0].without_mask()
    (unlabelled,) = data.with_teacher_maps([held], [_CountingTeacher()])
    assert unlabelled.teacher_maps[0].max() == pytest.approx(0.7, abs=1e-3)  # cached as float16


def test_mask_as_teacher_needs_a_labelled_source(tmp_path):
    values = _config(tmp_path)
    values["data"]["sources"][2]["mask_as_teacher"] = True  # the unlabelled scans
    with pytest.raises(ConfigError, match=r"data.sources\[2\].mask_as_teacher: .*scans"):
        config_from_dict(values)
