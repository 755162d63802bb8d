"""The view bank: a teacher labels each planned view once; the bank resumes after a kill,
grows, replays the teacher's maps by content, and trains a student."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.cli import main
from prokd.data.io import read_volume
from prokd.data.layouts import find_cases
from prokd.data.view_store import ViewStore, bank_cases, open_bank
from prokd.distill.view_bank import build_bank, plan_views
from prokd.errors import DataError
from prokd.inference.volume_models import CallableVolumeModel, load_volume_model
from tests.conftest import tiny_phantom


def bright_teacher(image: sitk.Image) -> np.ndarray:
    """A teacher that calls the brightest voxels gland (a smooth map of the image), and
    records each call in the file ``PROKD_TEST_TEACHER_CALLS`` names (when set)."""
    calls = os.environ.get("PROKD_TEST_TEACHER_CALLS")
    if calls:
        with open(calls, "a") as handle:
            handle.write(f"{image.GetSize()}\n")
        time.sleep(float(os.environ.get("PROKD_TEST_TEACHER_SLEEP", "0")))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    high = float(np.percentile(array, 99)) or 1.0
    return np.clip(array / high, 0, 1) ** 4


SPEC = f"{__name__}:bright_teacher"


@pytest.fixture
def phantom(tmp_path):
    return tiny_phantom(tmp_path, sites=2, cases_per_site=2, seed=4)


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_the_same_view_gets_the_same_map_once(phantom, tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PROKD_TEST_TEACHER_CALLS", str(calls))
    _, cases = find_cases(phantom)
    teacher = CallableVolumeModel(SPEC)
    store = ViewStore(tmp_path / "bank", teacher.name, teacher.fingerprint(), teacher.threshold)
    recipes = plan_views(cases, 3)
    first = build_bank(cases, teacher, store, recipes)
    assert (first.planned, first.found, first.made) == (12, 0, 12)
    assert _calls(calls) == 12
    kinds = [r.kind for r in recipes]
    assert kinds[:4] == ["acquired"] * 4 and len(set(kinds[4:])) >= 3
    again = build_bank(cases, teacher, store, plan_views(cases, 3))
    assert (again.found, again.made) == (12, 0)
    assert _calls(calls) == 12  # nothing labelled twice
    # The bank, as a teacher, gives back exactly what the teacher gave for each view, and
    # for each volume read from its own file.
    bank = load_volume_model(f"bank:{tmp_path / 'bank'}")
    assert bank.fingerprint() == teacher.fingerprint()
    for entry in store.entries():
        view = read_volume(entry.view)
        expected = bright_teacher(view)
        assert np.allclose(bank.probabilities(view), expected, atol=1e-6)
        assert bank.last_seconds == entry.teacher_seconds  # the teacher's time, not a read's
    for case in cases:
        image = read_volume(case.image)
        assert np.allclose(bank.probabilities(image), bright_teacher(image), atol=1e-6)
    assert _calls(calls) == 12 + len(store.entries()) + len(cases)  # the test's own calls
    with pytest.raises(DataError, match="no view in this bank"):
        bank.probabilities(sitk.Image([4, 4, 4], sitk.sitkFloat32))


def test_a_bank_grows_by_rounds_and_stops_at_its_deadline(phantom, tmp_path):
    _, cases = find_cases(phantom)
    teacher = CallableVolumeModel(SPEC)
    store = ViewStore(tmp_path / "bank", teacher.name, teacher.fingerprint(), teacher.threshold)
    build_bank(cases, teacher, store, plan_views(cases, 2))
    grown = build_bank(cases, teacher, store, plan_views(cases, 3))
    assert (grown.found, grown.made) == (8, 4)
    stopped = build_bank(cases, teacher, store, plan_views(cases, 5), deadline=time.monotonic())
    assert stopped.stopped_early and stopped.made == 0 and stopped.found == 12
    acquired = bank_cases(tmp_path / "bank", kinds=("acquired",))
    assert len(acquired) == 4 and {c.patient for c in acquired} == {c.patient for c in cases}
    labelled = frozenset(c.case_id for c in cases)
    assert len(bank_cases(tmp_path / "bank", labelled=labelled)) == 8
    with pytest.raises(DataError, match="no view to train on of acquired"):
        bank_cases(tmp_path / "bank", kinds=("acquired",), labelled=labelled)


def test_a_killed_build_resumes_where_it_stopped(phantom, tmp_path):
    """SIGKILL during a build (the teacher is slow), then the same command again: every view
    is in the bank, and the teacher labelled only what the first run had not finished."""
    calls = tmp_path / "calls.txt"
    config = tmp_path / "bank.yaml"
    config.write_text(f"data:\n  root: {phantom}\n")
    bank = tmp_path / "bank"
    env = {
        **os.environ,
        "PROKD_TEST_TEACHER_CALLS": str(calls),
        "PROKD_TEST_TEACHER_SLEEP": "0.5",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    argv = [sys.executable, "-m", "prokd.cli", "bank", str(config), "--teacher", SPEC]
    argv += ["--out", str(bank), "--views-per-volume", "2"]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(bank.glob("entries/*.json"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list(bank.glob("entries/*.json")))
    assert 2 <= done_before < 8, "the kill came after the build ended; slow the teacher"
    calls_before = _calls(calls)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "8 of 8 views" in result.stdout
    assert len(open_bank(bank).entries()) == 8
    assert _calls(calls) - calls_before == 8 - done_before
    assert not [p for p in bank.rglob("*") if p.name.startswith(".")], "a temporary file left"
    builds = [json.loads(line) for line in (bank / "builds.jsonl").read_text().splitlines()]
    assert builds[-1]["found"] == done_before and builds[-1]["made"] == 8 - done_before


def test_a_student_trains_on_a_bank_without_its_validation_patients(phantom, tmp_path):
    from prokd.training.config import load_config
    from prokd.training.runs import prepare_data

    _, cases = find_cases(phantom)
    teacher = CallableVolumeModel(SPEC)
    store = ViewStore(tmp_path / "bank", teacher.name, teacher.fingerprint(), teacher.threshold)
    build_bank(cases, teacher, store, plan_views(cases, 2))
    config = tmp_path / "student.yaml"
    config.write_text(
        f"""model: unet-w4
data:
  root: {phantom}
  cache_dir: {tmp_path / "cache"}
  sources:
    - {{root: {tmp_path / "bank"}, labelled: false, bank: true}}
preprocess: {{size: 32, fov_mm: 160.0}}
split: {{val_fraction: 0.5, test_fraction: 0.0}}
train: {{epochs: 1, batch_size: 4, slices_per_epoch: 8, unlabelled_share: 0.5}}
distill: {{teachers: ["bank:{tmp_path / "bank"}"]}}
"""
    )
    data = prepare_data(load_config(config))
    validation = {data.case(i).patient for i in data.split.val}
    assert validation
    assert {c.patient for c in data.unlabelled}.isdisjoint(validation)
    # Two views of each of the four volumes; the validation patients' views never train, and
    # a labelled training volume's view as acquired is the volume itself: left out too.
    train = {data.case(i).patient for i in data.split.train}
    assert len(data.unlabelled) == 2 * 4 - 2 * len(validation) - len(train)
    assert {c.patient for c in data.unlabelled} == train
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    only = bank_cases(tmp_path / "bank", (cases[0].site,))
    assert {c.site for c in only} == {cases[0].site} and len(only) == 4


def test_bank_refuses_an_unknown_view_kind(phantom, tmp_path, capsys):
    config = tmp_path / "bank.yaml"
    config.write_text(f"data:\n  root: {phantom}\n")
    argv = [
        "bank",
        str(config),
        "--teacher",
        SPEC,
        "--out",
        str(tmp_path / "b"),
        "--kinds",
        "mirror",
    ]
    assert main(argv) == 2
    assert "--kinds: unknown view kind 'mirror'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_views_of_unlabelled_volumes_are_planned_on_the_teachers_mask(phantom, tmp_path):
    """Volumes without a label: round 0 labels them as acquired, and the views planned on
    a gland (coil, mix, resliced series) are planned on the teacher's own mask of them."""
    from prokd.data.layouts import unlabelled_cases

    cases = unlabelled_cases(phantom)
    assert cases and not any(c.labelled for c in cases)
    teacher = CallableVolumeModel(SPEC)
    store = ViewStore(tmp_path / "bank", teacher.name, teacher.fingerprint(), teacher.threshold)
    recipes = plan_views(cases, 3, ("coil", "mix", "sagittal"))
    report = build_bank(cases, teacher, store, recipes)
    assert report.made == 3 * len(cases)
    assert {"coil", "mix", "sagittal"} <= {e.recipe.kind for e in store.entries()}


def test_a_config_may_name_a_bank_not_made_yet(tmp_path):
    """``bank:DIR`` is a teacher whether or not the bank exists when a config is read (a
    study's configs are checked before its bank is built); loading it says what is missing."""
    from prokd.inference.volume_models import is_volume_model

    spec = f"bank:{tmp_path / 'later'}"
    assert is_volume_model(spec)
    with pytest.raises(DataError, match="not a view bank"):
        load_volume_model(spec)


def test_no_view_mixed_with_a_held_out_patient_trains(phantom, tmp_path):
    _, cases = find_cases(phantom)
    teacher = CallableVolumeModel(SPEC)
    store = ViewStore(tmp_path / "bank", teacher.name, teacher.fingerprint(), teacher.threshold)
    build_bank(cases, teacher, store, plan_views(cases, 3, kinds=("mix",)))
    mixes = [e for e in open_bank(tmp_path / "bank").entries() if e.recipe.kind == "mix"]
    assert mixes, "the plan made no mix"
    mix = mixes[0]
    partner = next(c for c in cases if c.case_id == mix.recipe.partner)
    assert partner.patient != mix.recipe.patient
    every = {c.case_id for c in bank_cases(tmp_path / "bank")}
    kept = {c.case_id for c in bank_cases(tmp_path / "bank", held_out=frozenset({partner.patient}))}
    dropped = every - kept
    assert f"bank/{mix.key}" in dropped
    assert all(
        e.recipe.partner == partner.case_id for e in mixes if f"bank/{e.key}" in dropped
    ) and len(dropped) == sum(e.recipe.partner == partner.case_id for e in mixes)
