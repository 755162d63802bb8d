"""The experiment's models: what an evaluation's reuse depends on, and the best teacher
chosen on validation (never without it)."""

from types import SimpleNamespace

import pytest

from prokd.errors import ConfigError
from prokd.training.experiment_models import ExperimentModel, best_on_validation


def test_an_evaluation_fingerprint_holds_the_localiser_digest(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    model = ExperimentModel("student", "student", "", [SimpleNamespace(path=checkpoint)])
    assert model.fingerprint() == model.fingerprint(None)
    assert model.fingerprint("a") != model.fingerprint("b") != model.fingerprint()
    volume = SimpleNamespace(fingerprint=lambda: "taps")
    teacher = ExperimentModel("taps", "teacher", "", [], volume=volume)
    assert teacher.fingerprint("a") == teacher.fingerprint() == ["taps"]


def test_the_best_teacher_needs_validation_scores(tmp_path):
    import json

    teachers = []
    for name, dice in (("a", 0.7), ("b", 0.8), ("c", None)):
        folder = tmp_path / name
        folder.mkdir()
        summary = {"best_val_dice": dice, "best_epoch": 1}
        (folder / "train_summary.json").write_text(json.dumps(summary))
        teachers.append(SimpleNamespace(path=folder / "best.pt"))
    assert best_on_validation(teachers[:2]) is teachers[1]
    with pytest.raises(ConfigError, match="best-teacher needs validation cases"):
        best_on_validation(teachers)
