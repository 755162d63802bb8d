"""A tiny study grid end to end: 2 regimes x 2 seeds, resumed, summarised and reported."""

import json

import numpy as np
import pytest
import yaml

from prokd.cli import main
from prokd.errors import ConfigError
from prokd.training.study import comparison_list, load_study, run_study
from tests.conftest import tiny_phantom

BASE = {
    "preprocess": {"size": 32, "fov_mm": 128.0},
    "split": {"val_fraction": 0.25, "test_fraction": 0.25},
    "train": {"epochs": 1, "batch_size": 8, "slices_per_epoch": 8, "augment": False},
    "experiment": {
        "teacher": "unet-w4",
        "limit_teacher": "unet-w4",
        "student": "unet-w4",
        "limit_mode": "site",
        "strategies": ["uniform", "confidence"],
    },
}


def _study_file(tmp_path, regimes, seeds=(0, 1), pools=None):
    tmp_path.mkdir(exist_ok=True)
    base = {**BASE, "data": {"cache_dir": str(tmp_path / "cache")}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"base": "base.yaml", "seeds": list(seeds), "regimes": regimes}
    if pools:
        study["pools"] = pools
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_tiny_study_runs_resumes_and_reports(tmp_path_factory, tmp_path, capsys):
    data = tiny_phantom(tmp_path_factory.mktemp("phantom"), sites=2, cases_per_site=4, seed=2)
    regimes = {"all-labelled": {}, "one-labelled": {"split": {"labelled_per_site": 1}}}
    grid = load_study(_study_file(tmp_path / "grid", regimes))
    assert [c.folder for c in grid.cells] == [
        "all-labelled/seed0",
        "all-labelled/seed1",
        "one-labelled/seed0",
        "one-labelled/seed1",
    ]
    assert grid.cells[1].config.split.seed == 1 and grid.cells[1].config.train.seed == 1
    assert grid.cells[2].config.split.labelled_per_site == 1
    fewer = load_study(_study_file(tmp_path / "fewer", {"a": {}, "b": {"seeds": [1]}}))
    assert [c.folder for c in fewer.cells] == ["a/seed0", "a/seed1", "b/seed1"]
    assert grid.cells[0].config.split.labelled_per_site == 0
    study = load_study(_study_file(tmp_path, {"one-labelled": regimes["one-labelled"]}))
    out = tmp_path / "out"
    argv = ["study", str(study.path), "--out", str(out), "--data", str(data)]
    assert main([*argv, "--summarise"]) == 2
    assert "no finished cell to summarise" in capsys.readouterr().err
    summary = run_study(study, out, str(data), progress=False)
    small = summary["regimes"]["one-labelled"]
    assert small["seeds"] == [0, 1] and small["dice"]["student-nokd"]["n"] == 2
    assert small["val_dice"]["student-nokd"]["n"] == 2 and "ensemble-limit" not in small["val_dice"]
    # held-back cases reach the distilled students only, never the teachers
    split = json.loads((out / "one-labelled/seed0/split.json").read_text())
    assert len(split["unlabelled"]) == 2
    models = out / "one-labelled/seed0/models"
    teacher = json.loads((models / "teacher/train_summary.json").read_text())
    student = json.loads((models / "student-kd-p1/train_summary.json").read_text())
    assert teacher["unlabelled_cases"] == [] and student["unlabelled_cases"] == split["unlabelled"]
    tested = {
        case
        for seed in (0, 1)
        for case in json.loads((out / f"one-labelled/seed{seed}/split.json").read_text())["test"]
    }
    for regime in summary["regimes"].values():
        chosen = regime["comparisons"]["adaptive vs no-KD"]
        assert chosen["n_seeds"] == 2 and chosen["n_volumes"] == len(tested)  # distinct volumes
        assert chosen["ci"][0] <= chosen["mean"] <= chosen["ci"][1]
        assert chosen["mean"] == pytest.approx(np.mean(chosen["seed_means"]))
        assert set(regime["chosen_strategies"]) <= {
            "student-kd-p2-uniform",
            "student-kd-p2-confidence",
        }
    assert set(summary["latency"]["ms_per_volume"]) == {"unet-w4@32"}
    report = (out / "study.md").read_text()
    assert "| one-labelled | 2 |" in report and "| adaptive vs uniform |" in report
    listed = summary["comparisons"]
    assert {c["name"] for c in listed} >= {"adaptive vs uniform", "adaptive vs pooled procedure 1"}
    for entry in listed:
        assert {
            "name",
            "regime",
            "a",
            "b",
            "mean",
            "ci",
            "p",
            "p_holm",
            "n_seeds",
            "n_volumes",
        } <= set(entry)
        assert entry["p_holm"] == entry["p"]  # one regime: Holm over one test changes nothing
    assert "Wall time of the cells" in report and "Validation Dice (best epoch" in report
    assert "HD95 (mm) per test volume" in report and "Seconds per test volume" in report
    for metric in ("hd95", "assd", "seconds"):
        assert small[metric]["student-kd-p1"]["n"] == 2
    assert (out / "study_figures" / "study_dice.png").stat().st_size > 0
    assert (out / "study_figures" / "pareto.png").stat().st_size > 0
    assert json.loads((out / "study.json").read_text())["command"] == "run_study()"
    # Finished cells are skipped: a second run trains nothing and gives the same numbers.
    stamp = (models / "teacher" / "best.pt").stat().st_mtime_ns
    published = tmp_path / "docs"
    assert main([*argv, "--publish", str(published)]) == 0
    assert (models / "teacher" / "best.pt").stat().st_mtime_ns == stamp
    again = json.loads((out / "study.json").read_text())
    assert again["regimes"] == summary["regimes"]
    page = (published / "study.md").read_text()
    assert page.startswith("# prokd study: study")
    assert f"Made by `prokd study {study.path} --out {out} --data {data} --publish" in page
    assert "](study_figures/pareto.png)" in page
    assert (published / "study_figures" / "pareto.png").exists()
    assert json.loads((published / "study.json").read_text())["regimes"] == summary["regimes"]
    assert "| one-labelled | 2 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"seeds": [0], "regimes": {"a": {}}}, "base: missing"),
        ({"base": "base.yaml", "seeds": [], "regimes": {"a": {}}}, "seeds: expected"),
        ({"base": "base.yaml", "seeds": [0], "regimes": {}}, "regimes: expected"),
        (
            {"base": "base.yaml", "seeds": [0], "regimes": {"a": {"train": {"epochs": 0}}}},
            "regimes.a: train.epochs: must be at least 1",
        ),
        ({"base": "base.yaml", "seeds": [0], "regimes": {"a": {}}, "grid": 1}, "grid: unknown"),
        ({"base": "nope.yaml", "seeds": [0], "regimes": {"a": {}}}, "nope.yaml: config file"),
        (
            {"base": "base.yaml", "seeds": [0], "regimes": {"a": {"seeds": []}}},
            "regimes.a.seeds: expected a non-empty list",
        ),
        (
            {"base": "base.yaml", "seeds": [0], "regimes": {"a": {}}, "pools": {"p": ["b"]}},
            "pools.p: unknown regime 'b'",
        ),
        (
            {"base": "base.yaml", "seeds": [0], "regimes": {"a": {}}, "pools": {"a": ["a"]}},
            "pools.a: a regime has that name",
        ),
    ],
)
def test_bad_study_files_are_refused(tmp_path, study, message):
    _study_file(tmp_path, {"a": {}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError, match=message):
        load_study(path)


def test_cells_reuse_steps_that_train_the_same_model(tmp_path_factory, tmp_path):
    """A regime that changes only a strategy's temperature copies every other step (with its
    evaluation, and the limit-trained ensemble's) from the finished cell and trains that
    strategy's student anew."""
    data = tiny_phantom(tmp_path_factory.mktemp("phantom"), sites=2, cases_per_site=4, seed=2)
    regimes = {"base": {}, "warmer": {"distill": {"confidence_temperature": 0.5}}}
    pools = {"both": ["base", "warmer"]}
    study = load_study(_study_file(tmp_path, regimes, seeds=(0,), pools=pools))
    out = tmp_path / "out"
    summary = run_study(study, out, str(data), progress=False)
    base, warmer = out / "base/seed0", out / "warmer/seed0"
    for name in ("teacher", "limit-SiteA", "student-nokd", "student-kd-p2-uniform"):
        for part in (f"models/{name}/best.pt", f"evaluation/{name}/metrics.csv"):
            assert (warmer / part).stat().st_mtime_ns == (base / part).stat().st_mtime_ns, part
    ensemble = "evaluation/ensemble-limit/metrics.csv"  # no step of its own: copied all the same
    assert (warmer / ensemble).stat().st_mtime_ns == (base / ensemble).stat().st_mtime_ns
    confidence = "models/student-kd-p2-confidence"
    trained = (warmer / confidence / "best.pt").stat().st_mtime_ns
    assert trained > (base / confidence / "best.pt").stat().st_mtime_ns
    key = json.loads((warmer / confidence / "step_key.json").read_text())["key"]
    assert key["temperature"] == 0.5 and key["weighting"] == "confidence"
    rows = {r: summary["regimes"][r]["dice"] for r in regimes}
    assert rows["warmer"]["student-nokd"] == rows["base"]["student-nokd"]
    for name in regimes:
        r = summary["regimes"][name]
        assert r["selection_val_dice"] == r["chosen_p2_val_dice"]["mean"]
    assert "what a tuning study picks" in (out / "study.md").read_text()
    # a pool summarises the cells of its regimes together; it is never a tuning pick
    both = summary["regimes"]["both"]
    assert both["cells"] == 2 and both["pooled_from"] == ["base", "warmer"]
    assert both["dice"]["student-nokd"]["n"] == 2
    for label, pooled in both["comparisons"].items():  # one seed: its cells are one observation
        assert pooled["n_seeds"] == 1
        assert pooled["n_volumes"] == summary["regimes"]["base"]["comparisons"][label]["n_volumes"]
    holm_p = {(c["name"], c["regime"]): c["p_holm"] for c in summary["comparisons"]}
    assert holm_p[("adaptive vs uniform", "both")] is None  # one seed: no test, nothing to correct
    assert summary["best_on_validation"] == "both"  # with pools, a tuning pick compares them
    assert "Pool of the regimes base, warmer" in (out / "study.md").read_text()
    assert "both " not in (out / "study.md").read_text().split("Wall time of the cells")[1]


def test_comparison_list_corrects_each_comparison_over_the_regimes():
    def regime(p_uniform, p_nokd, pool=False):
        comparisons = {
            "adaptive vs uniform": {"a": "chosen", "b": "u", "p": p_uniform},
            "adaptive vs no-KD": {"a": "chosen", "b": "n", "p": p_nokd},
        }
        return {"comparisons": comparisons, **({"pooled_from": ["x", "y"]} if pool else {})}

    regimes = {"x": regime(0.01, 0.04), "y": regime(0.03, None), "both": regime(0.2, 0.5, True)}
    listed = {(c["name"], c["regime"]): c for c in comparison_list(regimes)}
    assert len(listed) == 6
    # Holm over the two regimes, each comparison its own family; the pool in its own family
    assert listed[("adaptive vs uniform", "x")]["p_holm"] == pytest.approx(0.02)
    assert listed[("adaptive vs uniform", "y")]["p_holm"] == pytest.approx(0.03)
    assert listed[("adaptive vs no-KD", "x")]["p_holm"] == pytest.approx(0.04)  # y: no test
    assert listed[("adaptive vs no-KD", "y")]["p_holm"] is None
    assert listed[("adaptive vs uniform", "both")]["p_holm"] == pytest.approx(0.2)
    assert listed[("adaptive vs uniform", "x")]["b"] == "u"
