"""Tiny end-to-end runs of the whole protocol (2 sites x 2 cases, 32x32, 1 epoch)."""

import json
import math
import shutil
from dataclasses import replace

import pytest
import torch

from prokd.cli import main
from prokd.errors import ConfigError, DataWarning
from prokd.evaluation.report import build_report
from prokd.evaluation.roles import STUDENT_NOKD, TEACHER
from prokd.training.config import config_from_dict, load_config, save_config
from prokd.training.experiment import Experiment, run_experiment
from prokd.training.plan import Step, plan_steps
from prokd.training.runs import prepare_data
from tests.conftest import CONFIGS, TINY_EXPERIMENT, tiny_demo, tiny_experiment, tiny_phantom

# The models of a two-site experiment before its procedure-2 students, in report order.
PROTOCOL_HEAD = (
    "teacher",
    "limit-SiteA",
    "limit-SiteB",
    "ensemble-limit",
    "student-nokd",
    "student-kd-p1",
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return tiny_phantom(tmp_path_factory.mktemp("phantom"), sites=2, cases_per_site=2, seed=1)


def test_tiny_experiment_end_to_end_and_resume(phantom, tmp_path):
    config = tiny_demo(tmp_path, teacher="unet-w8")
    out = tmp_path / "run"
    results = run_experiment(config, out, str(phantom), progress=False)
    names = [r["model"] for r in results["rows"]]
    assert names == [
        *PROTOCOL_HEAD,
        "student-kd-p2-uniform",
        "student-kd-p2-confidence",
        "student-kd-p2-label-aware",
    ]
    assert results["strategies_skipped"] == ["validation"]  # no validation case to weigh by
    for row in results["rows"]:
        for metric in ("dice", "iou", "hd95", "assd"):
            assert math.isfinite(row[metric]["mean"])
        assert set(row["site_dice"]) == {"SiteA", "SiteB"}
        assert (row["kd_gain"] is not None) == row["model"].startswith("student-kd")
    for name in (
        "config.yaml",
        "split.json",
        "environment.json",
        "limit_subsets.json",
        "results.json",
        "report.md",
        "evaluation/student-nokd/metrics.csv",
    ):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "| student-kd-p1 | student, procedure 1 |" in report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # box plot, curves, overlays
    assert "<td>student-kd-p2-uniform</td>" in page
    # A second run skips every finished step and gives the same results.
    stamp = (out / "models" / "teacher" / "best.pt").stat().st_mtime_ns
    again = run_experiment(config, out, str(phantom), progress=False)
    assert (out / "models" / "teacher" / "best.pt").stat().st_mtime_ns == stamp
    assert again["rows"] == json.loads((out / "results.json").read_text())["rows"]
    changed = config.replace(train={"lr": 0.1})
    with pytest.raises(ConfigError, match="another config"):
        run_experiment(changed, out, str(phantom), progress=False)
    # A retrained model is evaluated again; the others' evaluations are reused.
    evaluation = out / "evaluation"
    teacher_stamp = (evaluation / "teacher" / "summary.json").stat().st_mtime_ns
    shutil.copy(out / "models" / "student-kd-p1" / "best.pt", out / "models" / "student-nokd")
    third = {
        r["model"]: r for r in run_experiment(config, out, str(phantom), progress=False)["rows"]
    }
    assert (evaluation / "teacher" / "summary.json").stat().st_mtime_ns == teacher_stamp
    assert third["student-nokd"]["dice"] == third["student-kd-p1"]["dice"]
    nokd = json.loads((evaluation / "student-nokd" / "summary.json").read_text())
    p1 = json.loads((evaluation / "student-kd-p1" / "summary.json").read_text())
    assert nokd["checkpoints"] == p1["checkpoints"]
    # The report draws overlays only from what evaluation stored, and says when it cannot.
    (evaluation / "teacher" / "overlays.npz").unlink()
    with pytest.warns(DataWarning, match="overlay figure not drawn"):
        build_report(out)
    assert "Overlay figure not drawn: " in (out / "report.md").read_text()


def test_experiment_with_validation_selects_on_validation(tmp_path_factory, tmp_path):
    """3 cases per site: train, validation and test. Checkpoints, early stopping, the
    `validation` strategy and the reported strategy all use validation Dice only; every
    limit-trained teacher saw its own subset and nothing else."""
    data = tiny_phantom(tmp_path_factory.mktemp("phantom3"), sites=2, cases_per_site=3, seed=4)
    config = tiny_demo(tmp_path).replace(
        split={"val_fraction": 0.34, "test_fraction": 0.34},
        train={"epochs": 3, "patience": 1},
    )
    out = tmp_path / "run"
    results = run_experiment(config, out, str(data), progress=False)
    assert results["strategies_skipped"] == []
    p2 = [r for r in results["rows"] if r["model"].startswith("student-kd-p2-")]
    assert {r["model"] for r in p2} >= {"student-kd-p2-validation"}
    best = max(p2, key=lambda r: r["val_dice"])
    assert results["strategy_selected_on_validation"] == best["model"]
    split = json.loads((out / "split.json").read_text())
    subsets = json.loads((out / "limit_subsets.json").read_text())
    for name, ids in subsets.items():
        summary = json.loads((out / "models" / f"limit-{name}" / "train_summary.json").read_text())
        assert summary["train_cases"] == ids and set(ids) <= set(split["train"])
    for run in (out / "models").iterdir():
        summary = json.loads((run / "train_summary.json").read_text())
        assert summary["val_cases"] == split["val"]
        checkpoint = torch.load(run / "best.pt", weights_only=False)
        assert checkpoint["epoch"] == summary["best_epoch"]
        assert checkpoint["val_dice"] == summary["best_val_dice"]
        log = (run / "log.csv").read_text().splitlines()[1:]
        scores = [float(line.split(",")[-1]) for line in log]
        assert summary["best_val_dice"] == max(scores)
        if summary["stopped_early"]:  # patience 1: the epoch after the best did not improve
            assert summary["epochs_run"] == summary["best_epoch"] + 1


def test_paper_six_site_config_runs_on_a_phantom_in_that_layout(phantom, tmp_path, capsys):
    config = tiny_experiment(load_config(CONFIGS / "paper-six-site.yaml"), tmp_path)
    assert config.data.layout == "six-site" and config.experiment.limit_mode == "site"
    config_path = tmp_path / "paper.yaml"
    from prokd.training.config import save_config

    save_config(config, config_path)
    assert (
        main(
            [
                "experiment",
                str(config_path),
                "--data",
                str(phantom),
                "--out",
                str(tmp_path / "paper"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "paper" / "results.json").read_text())
    student = next(r for r in results["rows"] if r["model"] == "student-nokd")
    assert student["params"] == 352_585  # the paper's ENet student
    printed = capsys.readouterr().out
    assert "report:" in printed
    assert f"paired over the {results['test_cases']} test volumes of this one seed" in printed
    assert "| p1 vs no-KD | student-kd-p1 | student-nokd |" in printed


def test_experiment_without_test_cases_is_refused(phantom, tmp_path):
    config = tiny_experiment(load_config(CONFIGS / "kd-benchmark.yaml"), tmp_path)
    config = config.replace(split={"test_fraction": 0.0})
    with pytest.raises(ConfigError, match="no test case"):
        run_experiment(config, tmp_path / "run", str(phantom), progress=False)


def test_train_command_teacher_then_distilled_student(phantom, tmp_path, capsys):
    from prokd.training.config import config_from_dict, save_config

    base = {"data": {"root": str(phantom), "cache_dir": str(tmp_path / "cache")}, **TINY_EXPERIMENT}
    teacher_cfg = save_config(config_from_dict({**base, "model": "unet-w8"}), tmp_path / "t.yaml")
    assert main(["train", str(teacher_cfg), "--out", str(tmp_path / "teacher")]) == 0
    assert main(["train", str(teacher_cfg), "--out", str(tmp_path / "teacher")]) == 2
    assert "use --resume" in capsys.readouterr().err
    student = {
        **base,
        "model": "unet-w4",
        "distill": {"teachers": [str(tmp_path / "teacher")], "weighting": "confidence"},
    }
    student_cfg = save_config(config_from_dict(student), tmp_path / "s.yaml")
    assert main(["train", str(student_cfg), "--out", str(tmp_path / "student")]) == 0
    log = (tmp_path / "student" / "log.csv").read_text().splitlines()
    assert "kl" in log[0] and "feature" in log[0]
    summary = json.loads((tmp_path / "student" / "train_summary.json").read_text())
    assert summary["weighting"] == "confidence" and len(summary["teachers"]) == 1
    for name in ("config.yaml", "split.json", "environment.json"):
        assert (tmp_path / "student" / name).exists()


def test_parallel_steps_give_the_numbers_of_one_job(phantom, tmp_path, capsys):
    """``--jobs 2`` trains independent steps in 2 processes; with the same thread count per
    step, results.json holds the same numbers as ``--jobs 1``."""
    config = tiny_demo(tmp_path).replace(
        train={"threads": 1}, experiment={"strategies": ("uniform",)}
    )
    path = tmp_path / "c.yaml"
    save_config(config, path)
    outs = {}
    for jobs in ("1", "2"):
        outs[jobs] = tmp_path / f"jobs{jobs}"
        argv = ["experiment", str(path), "--data", str(phantom), "--out", str(outs[jobs])]
        assert main([*argv, "--jobs", jobs]) == 0
    assert "] student-kd-p2-uniform finished in" in capsys.readouterr().out

    def numbers(out):
        rows = json.loads((out / "results.json").read_text())["rows"]
        return [{k: v for k, v in r.items() if k != "seconds_per_volume"} for r in rows]

    assert numbers(outs["2"]) == numbers(outs["1"])
    assert not (outs["2"] / "soft_targets").exists()


def test_students_may_train_without_the_teachers_augmentation(phantom, tmp_path):
    config = tiny_demo(tmp_path).replace(
        train={"augment": True}, experiment={"student_augment": False}
    )
    exp = Experiment(config, tmp_path / "run", prepare_data(config, str(phantom)), False)
    assert exp.job(Step("teacher", "unet-w4", TEACHER)).train.augment is True
    assert exp.job(Step("student-nokd", "unet-w4", STUDENT_NOKD)).train.augment is False
    same = tiny_demo(tmp_path).replace(train={"augment": True})
    exp = Experiment(same, tmp_path / "run2", prepare_data(same, str(phantom)), False)
    assert exp.job(Step("student-nokd", "unet-w4", STUDENT_NOKD)).train.augment is True


def bright_gland(image):
    """A volume teacher for the protocol: the brightest tenth of the voxels is gland."""
    import numpy as np
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    return np.where(array > np.percentile(array, 90), 0.9, 0.1).astype(np.float32)


def test_procedure_1_from_a_volume_teacher(phantom, tmp_path):
    """experiment.teacher may be a model prokd did not train: nothing trains it, procedure 1
    distils from its probabilities, and it is evaluated beside the students; with
    p2_teacher, procedure 2's student learns from it beside the limit-trained teachers."""
    spec = f"{__name__}:bright_gland"
    config = tiny_demo(tmp_path).replace(
        experiment={"teacher": spec, "strategies": ("uniform",), "p2_teacher": True}
    )
    out = tmp_path / "run"
    results = run_experiment(config, out, str(phantom), progress=False)
    assert not (out / "models" / "teacher").exists()
    rows = {r["model"]: r for r in results["rows"]}
    assert (
        rows["teacher"]["role"]
        == "teacher (tests.training.test_experiment:bright_gland, not trained here)"
    )
    assert rows["teacher"]["params"] is None and rows["teacher"]["val_dice"] is None
    p1 = json.loads((out / "models" / "student-kd-p1" / "train_summary.json").read_text())
    assert p1["volume_teachers"] == [spec] and p1["teachers"] == []
    key = json.loads((out / "models" / "student-kd-p1" / "step_key.json").read_text())["key"]
    assert len(key["volume_teachers"]) == 1
    p2 = json.loads((out / "models" / "student-kd-p2-uniform" / "train_summary.json").read_text())
    limit = json.loads((out / "limit_subsets.json").read_text())
    assert p2["volume_teachers"] == [spec] and len(p2["teachers"]) == len(limit) >= 2
    assert rows["student-kd-p2-uniform"]["role"].endswith("(uniform), with the teacher")
    assert "| teacher |" in (out / "report.md").read_text()


def test_without_strategies_procedure_2_and_its_limit_teachers_are_left_out(phantom, tmp_path):
    """Procedure 1 alone, here with pseudo-labels from the volume teacher."""
    spec = f"{__name__}:bright_gland"
    config = tiny_demo(tmp_path).replace(
        experiment={"teacher": spec, "strategies": ()}, train={"pseudo_labels": True}
    )
    out = tmp_path / "run"
    results = run_experiment(config, out, str(phantom), progress=False)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["student-kd-p1", "student-nokd"]
    keys = {
        name: json.loads((out / "models" / name / "step_key.json").read_text())["key"]
        for name in ("student-kd-p1", "student-nokd")
    }  # pseudo-labels act on (and key) the distilled student only
    assert keys["student-kd-p1"]["train"]["pseudo_labels"] is True
    assert "pseudo_labels" not in keys["student-nokd"]["train"]
    assert [r["model"] for r in results["rows"]] == ["teacher", "student-nokd", "student-kd-p1"]
    assert results["strategy_selected_on_validation"] is None
    assert list(results["comparisons"]) == ["p1 vs no-KD", "p1 vs teacher"]
    assert json.loads((out / "limit_subsets.json").read_text()) == {}
    assert "student-kd-p1" in (out / "report.md").read_text()


def test_site_teacher_regime_trains_students_at_the_centre(tmp_path_factory, tmp_path):
    """Site teachers on their own labels; the students at SiteA see SiteA's labels and the
    other site's training volumes without masks; procedure 1 keeps the pooled labels."""
    phantom = tiny_phantom(tmp_path_factory.mktemp("sites"), sites=2, cases_per_site=3, seed=2)
    config = tiny_demo(tmp_path).replace(
        split={"val_fraction": 0.34, "test_fraction": 0.34},
        experiment={
            "centre_site": "SiteA",
            "strategies": ("uniform", "agreement", "site"),
            "baselines": ("best-teacher", "self-training"),
        },
    )
    out = tmp_path / "run"
    results = run_experiment(config, out, str(phantom), progress=False)
    assert [r["model"] for r in results["rows"]] == [
        *PROTOCOL_HEAD,
        "student-kd-p2-uniform",
        "student-kd-p2-agreement",
        "student-kd-p2-site",
        "student-kd-best-teacher",
        "student-self-training",
    ]
    exp = Experiment(config, out, prepare_data(config.replace(data={"root": str(phantom)})), False)
    steps = {s.name: s for s in plan_steps(config, {"SiteA": ("a1",), "SiteB": ()}, True)}
    for name in ("student-nokd", "student-kd-p2-site", "student-self-training"):
        job = exp.job(steps[name])
        assert {v.site for v in job.train_volumes} == {"SiteA"}, name
    job = exp.job(steps["student-kd-p2-site"])
    assert {v.site for v in job.unlabelled_volumes} == {"SiteB"}
    assert not any(v.labelled or v.mask.any() for v in job.unlabelled_volumes)
    assert {v.site for v in exp.job(steps["student-kd-p1"]).train_volumes} == {"SiteA", "SiteB"}
    assert steps["student-kd-p2-site"].teacher_sites == ("SiteA", "SiteB")
    # The gate's facts: the teachers to run and each one's training cases.
    assert steps["student-kd-p2-site"].teacher_cases == (("a1",), ())
    facts = exp.job(replace(steps["student-kd-p2-site"], weighting="gate")).weighting.facts
    assert facts.training_cases == [frozenset({"a1"}), frozenset()]
    images = torch.zeros(2, 1, 32, 32)
    assert [z.shape for z in facts.teacher_logits(images)] == [(2, 2, 32, 32)] * 2
    best = exp.job(steps["student-kd-best-teacher"]).teachers
    scores = {n: exp.trained(n) for n in ("limit-SiteA", "limit-SiteB")}
    assert len(best) == 1 and best[0].path in {m.path for m in scores.values()}
    assert [t.path.parent.name for t in exp.job(steps["student-self-training"]).teachers] == [
        "student-nokd"
    ]


def test_site_teacher_regime_needs_site_teachers():
    with pytest.raises(ConfigError, match="needs limit_mode: site"):
        config_from_dict({"experiment": {"centre_site": "SiteA", "limit_mode": "random"}})
    with pytest.raises(ConfigError, match="unknown baseline"):
        config_from_dict({"experiment": {"baselines": ["oracle"]}})
