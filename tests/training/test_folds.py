"""Leave one source out as a study (``folds:``): a held-out source never reaches a fold's
training, validation (the epoch choice), unlabelled data, view bank, localiser or QC
level."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from prokd.data.layouts import find_cases
from prokd.data.view_store import ViewStore, open_bank
from prokd.distill.view_bank import build_bank, plan_views
from prokd.errors import ConfigError
from prokd.inference.volume_models import CallableVolumeModel
from prokd.training.cell_inputs import CELL_INPUTS
from prokd.training.config import config_from_dict
from prokd.training.contrasts import regime_contrasts
from prokd.training.fold_qc import QC_ROWS
from prokd.training.folds import fold_localiser_file, localiser_config
from prokd.training.runs import prepare_data
from prokd.training.study import cell_config, load_study, run_study
from tests.conftest import tiny_phantom


def bright(image: sitk.Image) -> np.ndarray:
    """A teacher prokd did not train: the brightest voxels are gland."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return (array > np.percentile(array, 97)).astype(np.float32)


TEACHER = f"{__name__}:bright"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three sites of labelled volumes, a fourth whose masks only test (as AI-made
    references of volumes that train unlabelled elsewhere), and a bank of views of all."""
    root = tmp_path_factory.mktemp("folds")
    data = tiny_phantom(root / "a", sites=3, cases_per_site=2, seed=3)
    extra = tiny_phantom(root / "b", sites=1, cases_per_site=2, seed=9)
    _, cases = find_cases(data)
    teacher = CallableVolumeModel(TEACHER)
    store = ViewStore(root / "bank", teacher.name, teacher.fingerprint(), teacher.threshold)
    build_bank(cases, teacher, store, plan_views(cases, 2))
    return root, data, extra


def _study(
    root, data, extra, tmp_path, localiser=True, held_out=("SiteA", "SiteB", "extra"), **more
):
    tiny = {
        "model": "unet-w4",
        "preprocess": {"size": 32, "fov_mm": 160.0},
        "split": {"val_fraction": 0.5, "test_fraction": 0.0},
        "train": {"epochs": 1, "batch_size": 4, "slices_per_epoch": 8, "augment": False},
    }
    base = {
        **tiny,
        "preprocess": {"size": 32, "fov_mm": 160.0, "crop_centre": "gland"},
        "data": {
            "root": str(data),
            "cache_dir": str(tmp_path / "cache"),
            "sources": [
                {"root": str(extra), "site": "extra", "test_only": True},
                {"root": str(root / "bank"), "labelled": False, "bank": True},
            ],
        },
        "split": {"val_fraction": 0.5, "test_site": "SiteA"},
        "experiment": {"teacher": TEACHER, "student": "unet-w4", "strategies": []},
    }
    locator = {
        **tiny,
        "preprocess": {"size": 32, "fov_mm": 480.0},
        "data": {
            "root": str(data),
            "cache_dir": str(tmp_path / "cache"),
            "sources": [{"root": str(extra), "site": "extra"}],
        },
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "localiser.yaml").write_text(yaml.safe_dump(locator))
    folds = {"sources": list(held_out), "exploratory": ["extra"], "qc": "student-kd-p1"}
    if localiser:
        folds["localiser"] = "localiser.yaml"
    study = {"base": "base.yaml", "seeds": [0], "regimes": {"kd": {}}, "folds": folds, **more}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return load_study(path)


def test_a_fold_never_sees_its_held_out_source(sources, tmp_path):
    root, data, extra = sources
    study = _study(root, data, extra, tmp_path)
    assert [c.regime for c in study.cells] == ["kd-SiteA", "kd-SiteB", "kd-extra"]
    assert study.pools == {"kd": ("kd-SiteA", "kd-SiteB", "kd-extra")}
    for cell in study.cells:
        held = cell.fold
        prepared = prepare_data(cell.config)
        site = {c.case_id: c.site for c in [*prepared.cases, *prepared.unlabelled]}
        training = [*prepared.split.train, *prepared.split.val, *prepared.split.unlabelled]
        assert training and all(site[i] != held for i in training), held
        assert prepared.unlabelled and all(c.site != held for c in prepared.unlabelled), held
        # nor does a validation or test patient's image, through a view mixed with it
        entries = {f"bank/{e.key}": e.recipe for e in open_bank(root / "bank").entries()}
        assert any(r.partner for r in entries.values())
        kept = [entries[c.case_id] for c in prepared.unlabelled if c.case_id in entries]
        held_ids = {*prepared.split.val, *prepared.split.test}
        assert all(r.partner not in held_ids for r in kept), held
        assert prepared.split.test and all(site[i] == held for i in prepared.split.test)
        if held != "extra":  # test-only masks never train or validate, in no fold
            assert all(site[i] != "extra" for i in training)
        # the fold's localiser: trained without the source (labelled or not)
        localiser = prepare_data(localiser_config(study.folds, held))
        everything = [*localiser.cases, *localiser.unlabelled]
        assert everything and all(c.site != held for c in everything), held


def test_a_view_mixed_with_a_validation_patient_never_trains(sources, tmp_path):
    """Every volume is mixed with the other volume of its site, and each site has one
    validation volume: the training volume's mix carries the validation patient's image."""
    root, data, extra = sources
    _, cases = find_cases(data)
    teacher = CallableVolumeModel(TEACHER)
    bank = tmp_path / "mixes"
    store = ViewStore(bank, teacher.name, teacher.fingerprint(), teacher.threshold)
    build_bank(cases, teacher, store, plan_views(cases, 2, kinds=("mix",)))
    study = _study(root, data, extra, tmp_path, held_out=("SiteA", "extra"))
    values = study.cells[0].config.to_dict()
    values["data"]["sources"] = [{"root": str(bank), "labelled": False, "bank": True}]
    config = config_from_dict(values)
    prepared = prepare_data(config)
    held = {*prepared.split.val, *prepared.split.test}
    recipes = {f"bank/{e.key}": e.recipe for e in open_bank(bank).entries()}
    mixed_with_held = {k for k, r in recipes.items() if r.partner in held}
    training_patients = {c.patient for c in prepared.cases if c.case_id in prepared.split.train}
    assert any(recipes[k].patient in training_patients for k in mixed_with_held)
    assert {c.case_id for c in prepared.unlabelled} == {
        k
        for k, r in recipes.items()
        if r.patient in training_patients and r.kind != "acquired" and k not in mixed_with_held
    }


def test_a_study_of_folds_trains_each_fold_its_localiser(sources, tmp_path):
    root, data, extra = sources
    study = _study(root, data, extra, tmp_path, held_out=("SiteB", "extra"))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--only: 'kd' is not a regime"):
        run_study(study, out, progress=False, only=("kd",))
    records = tmp_path / "records"  # kept across sessions whose run folders are lost
    first = run_study(study, out, progress=False, only=("kd-SiteB",), records=records)
    assert first["regimes_not_run"] == ["kd-extra"] and not (out / "kd-extra").exists()
    assert first["regimes"]["kd"]["exploratory_folds"] == []  # none of its finished cells
    assert (records / "kd-SiteB" / "seed0" / "results.json").is_file()
    assert not (records / "kd-extra").exists()
    summary = run_study(study, out, progress=False, records=records)
    for cell in study.cells:
        localiser = fold_localiser_file(out, cell.fold)
        assert localiser.is_file()
        saved = json.loads((out / cell.folder / "results.json").read_text())["config"]
        assert saved["preprocess"]["localiser"] == str(localiser)
        assert cell_config(study, cell, out).preprocess.localiser == str(localiser)
        run = yaml.safe_load((out / "localisers" / cell.fold / "config.yaml").read_text())
        assert cell.fold in run["data"]["exclude_sites"]
        # the QC level: chosen on the fold's validation volumes, none of the held-out source
        qc_rows = json.loads((out / cell.folder / QC_ROWS).read_text())["rows"]
        split = json.loads((out / cell.folder / "split.json").read_text())
        assert sorted(r["case"] for r in qc_rows if r["role"] == "val") == sorted(split["val"])
        assert sorted(r["case"] for r in qc_rows if r["role"] == "test") == sorted(split["test"])
        assert all((r["site"] == cell.fold) == (r["role"] == "test") for r in qc_rows), cell.fold
    pooled = summary["regimes"]["kd"]
    qc = pooled["qc"]
    assert qc["model"] == "student-kd-p1" and set(qc["fold_levels"]) == {
        "kd-SiteB/seed0",
        "kd-extra/seed0",
    }
    assert (
        qc["nested"]["volumes"] == 4 and "QC of `student-kd-p1`" in (out / "study.md").read_text()
    )
    assert pooled["pooled_from"] == ["kd-SiteB", "kd-extra"]
    patients = pooled["comparisons"]["p1 vs no-KD"]["patients"]
    assert patients["n_patients"] == 4 and patients["n_volumes"] == 4
    assert "p1 vs teacher" in pooled["comparisons"]
    rows = [r for r in summary["rows"] if r["model"] == "student-kd-p1"]
    assert len(rows) == 4 and {r["regime"] for r in rows} == {"kd-SiteB", "kd-extra"}
    assert all(0 <= r["dice"] <= 1 and r["patient"] for r in rows)
    report = (out / "study.md").read_text()
    assert "with the patient as the unit" in report
    assert "| kd-extra (exploratory) |" in report and "| kd-SiteB |" in report
    assert "| kd (exploratory folds: extra) |" in report
    # a summary alone keeps every finished cell whose QC rows are measured
    run_study(study, out, progress=False, run_cells=False, records=tmp_path / "summarised")
    for cell in study.cells:
        kept = tmp_path / "summarised" / cell.folder
        assert (kept / "results.json").is_file() and (kept / QC_ROWS).is_file()
    made = summary["made_by"]["kd-SiteB/seed0"]
    assert made["seconds"] > 0 and made["machine"] and "finished" in made
    assert "| kd-SiteB/seed0 |" in report  # the table of what made each cell
    # A later session's empty run folder: the kept cells and localisers are restored, and
    # nothing is trained again (no model, no localiser run), with the same evidence.
    again = run_study(study, tmp_path / "later", progress=False, records=records)
    assert again["rows"] == summary["rows"] and again["regimes"]["kd"]["qc"] == qc
    assert again["made_by"] == summary["made_by"]
    for cell in study.cells:
        later = tmp_path / "later" / cell.folder
        assert not (later / "models").exists() and (later / QC_ROWS).is_file()
        assert not (tmp_path / "later" / "localisers" / cell.fold).exists()
        kept = fold_localiser_file(tmp_path / "later", cell.fold).read_bytes()
        assert kept == fold_localiser_file(out, cell.fold).read_bytes()
    # A regime changed in the study file since its cells finished: they are refused.
    changed = _study(
        root,
        data,
        extra,
        tmp_path,
        held_out=("SiteB", "extra"),
        regimes={"kd": {"train": {"epochs": 2}}},
    )
    with pytest.raises(
        ConfigError, match=r"kd-SiteB/seed0: made with train.epochs = 1, the study file now gives 2"
    ):
        run_study(changed, out, progress=False, run_cells=False)
    # The bank grows in place: a finished cell taught by the smaller bank is refused.
    entries = sorted((root / "bank" / "entries").glob("*.json"))
    recorded = json.loads((out / "kd-SiteB" / "seed0" / CELL_INPUTS).read_text())
    assert recorded == {"bank_views": {str(root / "bank"): len(entries)}}
    grown = entries[0].with_name("grown.json")
    grown.write_text(entries[0].read_text())
    try:
        with pytest.raises(ConfigError, match=rf"kd-SiteB/seed0: made with {len(entries)} views"):
            run_study(study, out, progress=False, run_cells=False)
    finally:
        grown.unlink()


def test_folds_are_checked(sources, tmp_path):
    root, data, extra = sources
    study = _study(root, data, extra, tmp_path, localiser=False)
    assert study.folds.localiser is None
    assert cell_config(study, study.cells[0], tmp_path).preprocess.localiser != "x"
    path = tmp_path / "study.yaml"
    values = yaml.safe_load(path.read_text())
    for folds, message in (
        ({"sources": ["SiteA"]}, "folds.sources: expected a list of at least two"),
        ({"sources": ["SiteA", "SiteA"]}, "named twice"),
        ({"sources": ["SiteA", "SiteB"], "seed": 1}, "folds.seed: unknown key"),
        ({"sources": ["SiteA", "SiteB"], "exploratory": ["SiteC"]}, "folds.exploratory"),
        ({"sources": ["SiteA", "SiteB"], "qc": "teacher"}, "folds.qc: expected a student's"),
    ):
        path.write_text(yaml.safe_dump({**values, "folds": folds}))
        with pytest.raises(ConfigError, match=message):
            load_study(path)
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["split"] = {"val_fraction": 0.5}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path.write_text(yaml.safe_dump({**values, "folds": {"sources": ["SiteA", "SiteB"]}}))
    with pytest.raises(ConfigError, match="test_only: needs split.test_site"):
        load_study(path)  # test-only masks without a test site would never be used


def test_a_contrast_compares_two_pools_per_patient_and_without_exploratory_folds(sources, tmp_path):
    """contrasts: one model of two pools, paired by (seed, case), the patient as the unit;
    'held out' drops the exploratory folds' volumes (checked against a hand computation)."""
    root, data, extra = sources
    study = _study(
        root,
        data,
        extra,
        tmp_path,
        localiser=False,
        regimes={"kd": {}, "wide": {"experiment": {"student": "unet-w8"}}},
        contrasts=[{"a": "wide", "b": "kd", "model": "student-kd-p1"}],
    )
    rows = []
    for regime, gain in (("kd", 0.0), ("wide", 1.0)):
        for fold, case, patient, dice in (
            ("SiteA", "SiteA/c1", "p1", 0.5),
            ("SiteA", "SiteA/c2", "p1", 0.6),  # p1's two volumes are one patient
            ("SiteB", "SiteB/c3", "p3", 0.7),
            ("extra", "extra/c4", "p4", 0.8),
        ):
            scale = {"SiteA/c1": 0.1, "SiteA/c2": 0.3, "SiteB/c3": -0.1, "extra/c4": 0.5}[case]
            row = {"regime": f"{regime}-{fold}", "seed": 0, "model": "student-kd-p1"}
            rows.append({**row, "case": case, "patient": patient, "dice": dice + gain * scale})
    rows.append({**rows[0], "model": "student-nokd", "dice": 0.0})  # another model: ignored
    fold_of = {c.regime: c.fold for c in study.cells}
    [contrast] = regime_contrasts(
        study.contrasts, study.pools, fold_of, study.folds.exploratory, rows
    )
    assert contrast["name"] == "student-kd-p1: wide vs kd"
    everyone = contrast["patients"]  # per patient: p1 (0.1 + 0.3) / 2, p3 -0.1, p4 0.5
    assert (everyone["n_patients"], everyone["n_volumes"], everyone["wins"]) == (3, 4, 2)
    assert everyone["mean"] == pytest.approx((0.2 - 0.1 + 0.5) / 3)
    held_out = contrast["held_out"]  # extra is exploratory
    assert held_out["n_patients"] == 2 and held_out["mean"] == pytest.approx((0.2 - 0.1) / 2)
    path = tmp_path / "study.yaml"
    values = yaml.safe_load(path.read_text())
    for contrasts, message in (
        ({"a": "wide", "b": "kd"}, "expected a list"),
        ([{"a": "wide", "b": "kd"}], r"contrasts\[0\]: expected exactly the keys"),
        ([{"a": "wide", "b": "narrow", "model": "x"}], r"contrasts\[0\].b: unknown regime"),
    ):
        path.write_text(yaml.safe_dump({**values, "contrasts": contrasts}))
        with pytest.raises(ConfigError, match=message):
            load_study(path)
