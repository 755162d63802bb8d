"""``prokd experiment``: the whole protocol, resumable step by step.

splits -> well-trained teacher and limit-trained teachers -> no-KD student -> procedure 1
(teacher -> student) -> procedure 2 (limit-trained teachers -> student, one run per weighting
strategy) -> evaluation of every model (and of the limit-trained ensemble) on the test cases
per 3D volume and per site -> ``results.json`` and ``report.md``. Finished steps are skipped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prokd.checkpoint import LAST, TrainedModel, load_trained_model
from prokd.config import Config
from prokd.data.splits import limit_trained_subsets
from prokd.distill.ensemble import ProbabilityAverage
from prokd.distill.weighting import build_weighting
from prokd.errors import ConfigError
from prokd.evaluate import evaluate_cases, write_evaluation
from prokd.io_atomic import atomic_path
from prokd.models.profile import count_parameters
from prokd.report import build_report
from prokd.runs import PreparedData, prepare_data, write_run_metadata
from prokd.train import TrainJob, run_training, training_finished


@dataclass
class EvaluatedModel:
    """A model of the experiment as evaluated: its role, size and test summary."""

    name: str
    role: str
    params: int
    summary: dict[str, Any]
    val_dice: float | None


def _check_same_config(out: Path, config: Config) -> None:
    saved = out / "config.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != config.to_dict():
        raise ConfigError(
            f"{out}: holds an experiment made with another config; "
            "use a new --out or the same config"
        )


class Experiment:
    """The protocol's steps over one prepared dataset and run folder."""

    def __init__(self, config: Config, out: Path, data: PreparedData, progress: bool) -> None:
        self.config, self.out, self.data, self.progress = config, out, data, progress
        split = data.split
        self.train_volumes = data.volumes(split.train, "preprocess train")
        self.val_volumes = data.volumes(split.val, "preprocess val")

    def train(
        self,
        name: str,
        model: str,
        case_ids: tuple[str, ...] | None = None,
        teachers: list[TrainedModel] | None = None,
        weighting: str = "uniform",
        teacher_val_dice: list[float] | None = None,
        student: bool = True,
        soft_targets: str | None = None,
    ) -> TrainedModel:
        """Train (or finish, or reuse) one model under ``models/<name>``."""
        run_dir = self.out / "models" / name
        if not training_finished(run_dir):
            e, cfg = self.config.experiment, self.config.train
            epochs = (e.student_epochs if student else e.teacher_epochs) or cfg.epochs
            volumes = self.train_volumes if case_ids is None else self.data.volumes(case_ids)
            cache = None
            if soft_targets and teachers and self.config.distill.soft_target_cache:
                cache = self.out / "soft_targets" / soft_targets
            job = TrainJob(
                run_dir,
                model,
                volumes,
                self.val_volumes,
                self.config.preprocess,
                self.config.replace(train={"epochs": epochs}).train,
                self.config.loss,
                teachers or [],
                build_weighting(weighting, teacher_val_dice),
                cache,
            )
            run_training(job, resume=(run_dir / LAST).exists(), progress=self.progress)
        return load_trained_model(run_dir)

    def evaluate(self, models: dict[str, tuple[str, list[TrainedModel]]]) -> list[EvaluatedModel]:
        """Test-set metrics of every model (an averaged ensemble when several members).

        Summaries already on disk (``evaluation/<name>/summary.json``) are reused.
        """
        networks = {}
        for name, (_, members) in models.items():
            if len(members) > 1:
                networks[name] = ProbabilityAverage([m.network for m in members])
            else:
                networks[name] = members[0].network
        todo = [n for n in models if not (self.out / "evaluation" / n / "summary.json").exists()]
        if todo:
            cases = [self.data.case(i) for i in self.data.split.test]
            todo_models = {n: (networks[n], models[n][1][0].settings) for n in todo}
            for name, rows in evaluate_cases(todo_models, cases, self.progress).items():
                write_evaluation(rows, self.out / "evaluation" / name)
        evaluated = []
        for name, (role, members) in models.items():
            summary = json.loads((self.out / "evaluation" / name / "summary.json").read_text())
            val = _val_dice(members[0]) if len(members) == 1 else None
            evaluated.append(
                EvaluatedModel(name, role, count_parameters(networks[name]), summary, val)
            )
        return evaluated


def _val_dice(model: TrainedModel) -> float | None:
    summary = model.path.parent / "train_summary.json"
    value = json.loads(summary.read_text()).get("best_val_dice") if summary.exists() else None
    return None if value is None else float(value)


def run_experiment(
    config: Config, out: str | Path, data_root: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run (or continue) the whole protocol into ``out``; returns the results."""
    out = Path(out)
    if data_root:
        config = config.replace(data={"root": str(Path(data_root))})
    _check_same_config(out, config)
    data = prepare_data(config)
    if not data.split.test:
        raise ConfigError("split.test_fraction gives no test case; raise it or add cases")
    write_run_metadata(out, config, data)
    e = config.experiment
    exp = Experiment(config, out, data, progress)

    teacher = exp.train("teacher", e.teacher, student=False)
    subsets = limit_trained_subsets(
        data.cases,
        data.split.train,
        e.limit_mode,
        e.limit_k,
        e.limit_fraction or None,
        config.split.seed,
    )
    with atomic_path(out / "limit_subsets.json") as tmp:
        tmp.write_text(json.dumps({k: list(v) for k, v in subsets.items()}, indent=1))
    limit = [
        exp.train(f"limit-{name}", e.limit_teacher, ids, student=False)
        for name, ids in subsets.items()
    ]
    nokd = exp.train("student-nokd", e.student)
    p1 = exp.train("student-kd-p1", e.student, teachers=[teacher], soft_targets="p1")
    limit_val = [_val_dice(m) for m in limit]
    strategies = [s for s in e.strategies if s != "validation" or None not in limit_val]
    skipped = sorted(set(e.strategies) - set(strategies))
    p2 = {
        s: exp.train(
            f"student-kd-p2-{s}",
            e.student,
            teachers=limit,
            weighting=s,
            teacher_val_dice=limit_val,
            soft_targets="p2",
        )
        for s in strategies
    }

    # Soft targets are only needed while students train; they are large, so they go.
    shutil.rmtree(out / "soft_targets", ignore_errors=True)

    models = {"teacher": ("well-trained teacher", [teacher])}
    models.update(
        {f"limit-{n}": ("limit-trained teacher", [m]) for n, m in zip(subsets, limit, strict=True)}
    )
    models["ensemble-limit"] = ("ensemble of limit-trained teachers", limit)
    models["student-nokd"] = ("student without KD", [nokd])
    models["student-kd-p1"] = ("student, procedure 1", [p1])
    models.update(
        {f"student-kd-p2-{s}": (f"student, procedure 2 ({s})", [m]) for s, m in p2.items()}
    )
    evaluated = exp.evaluate(models)
    results = _results(evaluated, subsets, skipped, config)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    build_report(out)
    return results


def _results(
    evaluated: list[EvaluatedModel],
    subsets: dict[str, tuple[str, ...]],
    skipped: list[str],
    config: Config,
) -> dict[str, Any]:
    nokd = next(m for m in evaluated if m.name == "student-nokd").summary["overall"]["dice"]
    rows = []
    for m in evaluated:
        overall = m.summary["overall"]
        rows.append(
            {
                "model": m.name,
                "role": m.role,
                "params": m.params,
                "val_dice": m.val_dice,
                **{
                    k: {"mean": overall[k]["mean"], "std": overall[k]["std"]}
                    for k in ("dice", "iou", "hd95", "assd")
                },
                "seconds_per_volume": overall["seconds"]["mean"],
                "site_dice": {s: b["dice"]["mean"] for s, b in m.summary["sites"].items()},
                "kd_gain": overall["dice"]["mean"] - nokd["mean"]
                if m.name.startswith("student-kd")
                else None,
            }
        )
    p2 = [r for r in rows if r["model"].startswith("student-kd-p2-") and r["val_dice"] is not None]
    chosen = max(p2, key=lambda r: r["val_dice"])["model"] if p2 else None
    return {
        "rows": rows,
        "limit_subsets": {k: len(v) for k, v in subsets.items()},
        "strategy_selected_on_validation": chosen,
        "strategies_skipped": skipped,
        "test_cases": evaluated[0].summary["overall"]["dice"]["n"],
        "config": config.to_dict(),
    }
