"""A training job built from a config: overrides, unlabelled volumes only where teachers
teach, and a teacher trained with other preprocessing refused."""

from types import SimpleNamespace

import pytest

from prokd.data.preprocess import PreprocessSettings
from prokd.errors import ConfigError
from prokd.training.config import config_from_dict
from prokd.training.job import TrainJob, settings_mismatch
from tests.conftest import slice_volume

CONFIG = config_from_dict(
    {"preprocess": {"size": 32, "fov_mm": 32.0}, "train": {"epochs": 7, "batch_size": 4}}
)


def test_overrides_and_unlabelled_volumes(tmp_path):
    train, val, unlabelled = (
        [slice_volume(0), slice_volume(1)],
        [slice_volume(2)],
        [slice_volume(3)],
    )
    plain = TrainJob.from_config(
        CONFIG, tmp_path, train, val, model="unet-w4", epochs=2, unlabelled_volumes=unlabelled
    )
    assert (plain.model_name, plain.train.epochs, plain.distilled) == ("unet-w4", 2, False)
    assert plain.unlabelled_volumes == []  # nothing teaches from them without teachers
    assert len(plain.training_slices()) == sum(len(v.image) for v in train)
    taught = TrainJob.from_config(
        CONFIG, tmp_path, train, val, unlabelled_volumes=unlabelled, volume_teachers=["taps"]
    )
    assert taught.distilled and taught.unlabelled_volumes == unlabelled
    assert taught.train.epochs == 7 and taught.model_name == CONFIG.model
    assert len(taught.training_slices()) == sum(len(v.image) for v in train + unlabelled)


def test_a_teacher_with_other_preprocessing_is_refused(tmp_path):
    other = PreprocessSettings(size=64, fov_mm=32.0)
    assert settings_mismatch(other, CONFIG.preprocess) == "size: teacher 64, student 32"
    assert settings_mismatch(CONFIG.preprocess, CONFIG.preprocess) is None
    teacher = SimpleNamespace(settings=other, path=tmp_path / "teacher" / "best.pt")
    with pytest.raises(ConfigError, match="teacher preprocessing differs from the config's"):
        TrainJob.from_config(CONFIG, tmp_path, [slice_volume(0)], [], teachers=[teacher])
