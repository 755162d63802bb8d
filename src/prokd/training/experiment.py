"""``prokd experiment``: the whole protocol, resumable step by step.

splits -> well-trained teacher and limit-trained teachers -> no-KD student -> procedure 1
(teacher -> student) -> procedure 2 (limit-trained teachers -> student, one run per weighting
strategy) -> evaluation of every model (and of the limit-trained ensemble) on the test cases
per 3D volume and per site -> ``results.json`` and ``report.md``. Finished steps are skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prokd.data.io import file_sha256
from prokd.data.preprocess import PreprocessSettings
from prokd.data.splits import Split, limit_trained_subsets
from prokd.distill.ensemble import ProbabilityAverage
from prokd.distill.volume_teachers import VolumeTeacher, is_volume_teacher, load_volume_teacher
from prokd.errors import ConfigError
from prokd.evaluation.evaluate import evaluate_cases, write_evaluation
from prokd.evaluation.report import build_report
from prokd.evaluation.stats import paired_comparison
from prokd.inference.model_files import onnx_parameters
from prokd.inference.trained import TrainedModel, load_trained_model
from prokd.io_atomic import atomic_path, remove_stale_temporaries, temporary_name
from prokd.models.profile import count_parameters
from prokd.training.checkpoints import LAST
from prokd.training.config import Config
from prokd.training.distributed import Context
from prokd.training.loop import ONE_PROCESS, TrainJob, run_training, training_finished
from prokd.training.parallel import run_parallel, threads_per_job
from prokd.training.runs import (
    PreparedData,
    prepare_data,
    saved_config_differs,
    write_run_metadata,
)

OVERLAY_CASES = 3
STEP_KEY = "step_key.json"  # in a finished step's run folder: what its training depended on


@dataclass(frozen=True)
class Step:
    """One model to train: its run name, network, data, teachers and weighting.

    ``teachers`` names earlier steps; a step may start once they are finished.
    ``volume_teachers`` are teachers prokd does not train (see
    :mod:`prokd.distill.volume_teachers`).
    """

    name: str
    model: str
    student: bool
    case_ids: tuple[str, ...] | None = None
    teachers: tuple[str, ...] = ()
    weighting: str = "uniform"
    soft_targets: str | None = None  # name of the shared soft-target cache, if any
    volume_teachers: tuple[str, ...] = ()


def plan_steps(
    config: Config, subsets: dict[str, tuple[str, ...]], limit_val_known: bool
) -> list[Step]:
    """Every training step of the protocol, in the order ``--jobs 1`` runs them.

    ``validation`` weighting is planned only when the limit-trained teachers have
    validation scores (``limit_val_known``).
    """
    e = config.experiment
    limit = tuple(f"limit-{name}" for name in subsets)
    external = is_volume_teacher(e.teacher)  # procedure 1 from a model prokd did not train
    steps = [] if external else [Step("teacher", e.teacher, student=False)]
    steps += [
        Step(f"limit-{name}", e.limit_teacher, student=False, case_ids=ids)
        for name, ids in subsets.items()
    ]
    steps.append(Step("student-nokd", e.student, student=True))
    if external:
        steps.append(Step("student-kd-p1", e.student, True, volume_teachers=(e.teacher,)))
    else:
        steps.append(
            Step("student-kd-p1", e.student, True, teachers=("teacher",), soft_targets="p1")
        )
    steps += [
        Step(f"student-kd-p2-{s}", e.student, True, None, limit, s, soft_targets="p2")
        for s in e.strategies
        if s != "validation" or limit_val_known
    ]
    return steps


@dataclass
class ExperimentModel:
    """A model of the experiment: its name, role and trained members (several: an
    ensemble), or a volume teacher prokd did not train (``volume``)."""

    name: str
    role: str
    members: list[TrainedModel]
    volume: VolumeTeacher | None = None

    @property
    def network(self) -> torch.nn.Module:
        """The network to evaluate: the member, or the probability average of the members."""
        if len(self.members) == 1:
            return self.members[0].network
        return ProbabilityAverage([m.network for m in self.members])

    @property
    def settings(self) -> PreprocessSettings:
        """Preprocessing of the members (all trained with the experiment's settings)."""
        return self.members[0].settings

    def evaluable(self) -> tuple[torch.nn.Module, PreprocessSettings] | VolumeTeacher:
        """What :func:`~prokd.evaluation.evaluate.evaluate_cases` runs for this model."""
        return self.volume if self.volume is not None else (self.network, self.settings)

    def fingerprint(self) -> list[str]:
        """Contents of the members' checkpoints (or the volume teacher's model): an
        evaluation is reused only while equal."""
        if self.volume is not None:
            return [self.volume.fingerprint()]
        return [file_sha256(m.path) for m in self.members]

    def params(self) -> int | None:
        """Parameters of the members, or of a volume teacher's ONNX file (``None`` for a
        Python function)."""
        if self.volume is None:
            return sum(count_parameters(member.network) for member in self.members)
        path = getattr(self.volume, "path", None)
        return onnx_parameters(path) if path and path.suffix == ".onnx" else None


@dataclass
class EvaluatedModel:
    """A model of the experiment as evaluated: its role, size, test summary and per-volume
    test Dice (case id -> Dice)."""

    name: str
    role: str
    params: int | None
    summary: dict[str, Any]
    val_dice: float | None
    dice: dict[str, float]


def _check_same_config(out: Path, config: Config) -> None:
    if saved_config_differs(out, config):
        raise ConfigError(
            f"{out}: holds an experiment made with another config; "
            "use a new --out or the same config"
        )


class Experiment:
    """The protocol's steps over one prepared dataset and run folder."""

    def __init__(
        self,
        config: Config,
        out: Path,
        data: PreparedData,
        progress: bool,
        context: Context = ONE_PROCESS,
        reuse_from: tuple[Path, ...] = (),
    ) -> None:
        self.config, self.out, self.data, self.progress = config, out, data, progress
        self.context, self.reuse_from = context, reuse_from
        self._volume_teachers: dict[str, VolumeTeacher] = {}
        split = data.split
        self.train_volumes = data.volumes(split.train, "preprocess train")
        self.val_volumes = data.volumes(split.val, "preprocess val")
        self.unlabelled_volumes = data.unlabelled_volumes()

    def trained(self, name: str) -> TrainedModel:
        """The trained model of a finished step."""
        return load_trained_model(self.out / "models" / name, self.context.device)

    def soft_target_dir(self, step: Step) -> Path | None:
        """Where a step's shared soft-target cache lives (``None``: teachers run live)."""
        if step.soft_targets and self.config.distill.soft_target_cache:
            return self.out / "soft_targets" / step.soft_targets
        return None

    def job(self, step: Step) -> TrainJob:
        """The training job of a step, its teachers loaded from their finished steps."""
        e, cfg = self.config.experiment, self.config.train
        teachers = [self.trained(name) for name in step.teachers]
        volumes = self.train_volumes if step.case_ids is None else self.data.volumes(step.case_ids)
        unlabelled = self.unlabelled_volumes
        external = [self.volume_teacher(spec) for spec in step.volume_teachers]
        if external:
            volumes = self.data.with_teacher_maps(volumes, external)
            unlabelled = self.data.with_teacher_maps(unlabelled, external)
        scores = [_val_dice(t) for t in teachers]  # volume teachers have none
        config = self.config
        if step.student and e.student_augment is not None:
            config = config.replace(train={"augment": e.student_augment})
        return TrainJob.from_config(
            config,
            self.out / "models" / step.name,
            volumes,
            self.val_volumes,
            model=step.model,
            epochs=(e.student_epochs if step.student else e.teacher_epochs) or cfg.epochs,
            teachers=teachers,
            weighting=step.weighting,
            teacher_val_dice=None if external or None in scores else scores,
            soft_target_dir=self.soft_target_dir(step),
            unlabelled_volumes=unlabelled,
            volume_teachers=[t.name for t in external],
        )

    def volume_teacher(self, spec: str) -> VolumeTeacher:
        """A volume teacher, loaded once per experiment."""
        if spec not in self._volume_teachers:
            self._volume_teachers[spec] = load_volume_teacher(spec)
        return self._volume_teachers[spec]

    def step_key(self, step: Step, job: TrainJob) -> dict[str, Any]:
        """What a step's trained model and its test evaluation depend on: steps with equal
        keys give the same model (training is seeded), so one can stand for the other."""
        distilled = job.distilled
        loss = dataclasses.asdict(job.loss)
        if not distilled:  # the teacher terms and their options do not act
            loss = {k: v for k, v in loss.items() if k == "dice" or k.startswith("lovasz")}
        train = dataclasses.asdict(job.train)
        if not (distilled and train["pseudo_labels"]):  # added later: keys stay as they were
            del train["pseudo_labels"]
        split = self.data.split
        return {
            "model": _network_key(job),
            "data": dataclasses.asdict(self.config.data),
            "settings": json.loads(job.settings.fingerprint()),
            "train": train,
            "loss": loss,
            "train_cases": [v.case_id for v in job.train_volumes],
            "val_cases": list(split.val),
            "test_cases": list(split.test),
            "unlabelled_cases": [v.case_id for v in job.unlabelled_volumes],
            "teachers": [file_sha256(t.path) for t in job.teachers],
            "volume_teachers": [self.volume_teacher(s).fingerprint() for s in step.volume_teachers],
            "weighting": step.weighting if distilled else None,
            "temperature": self.config.distill.temperature(step.weighting) if distilled else None,
            "soft_targets": job.soft_target_dir is not None,
            "augmented_views": job.augmented_views if distilled else 0,
        }

    def twin(self, step: Step, key: Any = None) -> Path | None:
        """The experiment folder among ``reuse_from`` where a twin of ``step`` (same name,
        equal :meth:`step_key`, given as ``key`` read back from JSON, else computed) has
        finished; ``None`` if none or if the step has begun."""
        if not self.reuse_from or (self.out / "models" / step.name).exists():
            return None
        key = key if key is not None else _plain_json(self.step_key(step, self.job(step)))
        for folder in self.reuse_from:
            run_dir = folder / "models" / step.name
            saved = run_dir / STEP_KEY
            if training_finished(run_dir) and saved.exists():
                if json.loads(saved.read_text())["key"] == key:
                    return folder
        return None

    def run_step(self, step: Step) -> None:
        """Train (or finish) one step's model under ``models/<name>``; skip it if done.

        A step not started yet whose twin (same name, equal :meth:`step_key`) has finished
        in one of ``reuse_from`` is copied from there, with its test evaluation.
        """
        run_dir = self.out / "models" / step.name
        if training_finished(run_dir):
            return
        job = self.job(step)
        key = _plain_json(self.step_key(step, job))
        twin = self.twin(step, key)
        if twin is not None:
            for part in ("models", "evaluation"):
                if (twin / part / step.name).is_dir():
                    _copy_folder(twin / part / step.name, self.out / part / step.name)
            if self.progress:
                print(f"{step.name}: reused from {twin}", flush=True)
            return
        resume = (run_dir / LAST).exists()
        run_training(job, resume=resume, progress=self.progress, context=self.context)
        if self.context.is_main:
            with atomic_path(run_dir / STEP_KEY) as tmp:
                tmp.write_text(json.dumps({"key": key}, indent=1))

    def evaluate(self, models: list[ExperimentModel]) -> list[EvaluatedModel]:
        """Test-set metrics of every model (an averaged ensemble when several members).

        An evaluation on disk (``evaluation/<name>/summary.json``) is reused only while it
        records the same checkpoint contents; a retrained model is evaluated again.
        """
        summaries = {m.name: self.out / "evaluation" / m.name / "summary.json" for m in models}
        todo = [m for m in models if not _evaluated(summaries[m.name], m.fingerprint())]
        todo = [m for m in todo if not self._copy_evaluation(m)]
        if todo:
            cases = [self.data.case(i) for i in self.data.split.test]
            results = evaluate_cases(
                {m.name: m.evaluable() for m in todo},
                cases,
                self.progress,
                overlay_cases=OVERLAY_CASES,
            )
            for m in todo:
                write_evaluation(
                    results[m.name],
                    summaries[m.name].parent,
                    {"checkpoints": m.fingerprint()},
                )
        evaluated = []
        for m in models:
            summary = json.loads(summaries[m.name].read_text())
            val = _val_dice(m.members[0]) if len(m.members) == 1 else None
            dice = case_dice(summaries[m.name].parent)
            evaluated.append(EvaluatedModel(m.name, m.role, m.params(), summary, val, dice))
        return evaluated

    def _copy_evaluation(self, model: ExperimentModel) -> bool:
        """Copy ``model``'s evaluation from a folder of ``reuse_from`` that evaluated the
        same model (equal fingerprint) on the same test cases; ``False`` if there is none."""
        for folder in self.reuse_from:
            source = folder / "evaluation" / model.name
            split_file = folder / "split.json"
            if (
                _evaluated(source / "summary.json", model.fingerprint())
                and split_file.exists()
                and Split.load(split_file).test == self.data.split.test
            ):
                _copy_folder(source, self.out / "evaluation" / model.name)
                if self.progress:
                    print(f"evaluation of {model.name}: reused from {folder}", flush=True)
                return True
        return False


def _network_key(job: TrainJob) -> str:
    """The network a step trains, with its input channels when they are not one slice."""
    channels = job.settings.channels
    return job.model_name if channels == 1 else f"{job.model_name}, {channels} input channels"


def _plain_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _copy_folder(source: Path, target: Path) -> None:
    """Copy a folder whole: it appears under ``target`` only once complete."""
    tmp = target.parent / f"{temporary_name(target)}copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _evaluated(summary: Path, fingerprint: list[str]) -> bool:
    return summary.exists() and json.loads(summary.read_text()).get("checkpoints") == fingerprint


def _val_dice(model: TrainedModel) -> float | None:
    summary = model.path.parent / "train_summary.json"
    value = json.loads(summary.read_text()).get("best_val_dice") if summary.exists() else None
    return None if value is None else float(value)


def run_experiment(
    config: Config,
    out: str | Path,
    data_root: str | None = None,
    progress: bool = True,
    context: Context = ONE_PROCESS,
    jobs: int = 1,
    reuse_from: tuple[Path, ...] = (),
) -> dict[str, Any] | None:
    """Run (or continue) the whole protocol into ``out``; returns the results.

    A step whose twin has finished in one of the experiment folders ``reuse_from`` is copied
    instead of trained (see :meth:`Experiment.run_step`).

    With ``jobs`` > 1 independent steps (the teachers, the no-KD student, and the students
    once their teachers exist) run as parallel processes, splitting the cores. Under
    ``torchrun`` every rank trains every model together; rank 0 alone writes files,
    evaluates and reports, and the other ranks return ``None``.
    """
    out = Path(out)
    if jobs > 1 and context.distributed:
        raise ConfigError("--jobs runs steps as separate processes; not under torchrun")
    if data_root:
        config = config.replace(data={"root": str(Path(data_root))})
    _check_same_config(out, config)
    if out.is_dir() and context.is_main:
        remove_stale_temporaries(out)  # left by a killed run; this run owns the folder
    data = prepare_data(config)
    if not data.split.test:
        raise ConfigError("split.test_fraction gives no test case; raise it or add cases")
    if context.is_main:
        write_run_metadata(out, config, data)
    e = config.experiment
    exp = Experiment(config, out, data, progress and context.is_main, context, reuse_from)

    # No strategy: procedure 2 is off, and no limit-trained teacher is needed.
    subsets = (
        limit_trained_subsets(
            data.cases,
            data.split.train,
            e.limit_mode,
            e.limit_k,
            e.limit_fraction or None,
            config.split.seed,
        )
        if e.strategies
        else {}
    )
    if context.is_main:
        with atomic_path(out / "limit_subsets.json") as tmp:
            tmp.write_text(json.dumps({k: list(v) for k, v in subsets.items()}, indent=1))
    steps = plan_steps(config, subsets, limit_val_known=bool(data.split.val))
    if jobs > 1:
        run_parallel(exp, steps, jobs)
    else:
        for step in steps:
            exp.run_step(step)
    if not context.is_main:
        return None
    skipped = sorted(set(e.strategies) - {s.weighting for s in steps if s.soft_targets == "p2"})
    trained = {step.name: exp.trained(step.name) for step in steps}
    nokd, p1 = trained["student-nokd"], trained["student-kd-p1"]
    limit = [trained[f"limit-{name}"] for name in subsets]
    p2 = {s.weighting: trained[s.name] for s in steps if s.soft_targets == "p2"}
    # Soft targets are only needed while students train; they are large, so they go.
    shutil.rmtree(out / "soft_targets", ignore_errors=True)

    if "teacher" not in trained:  # procedure 1 from a volume teacher: nothing trained it
        volume = exp.volume_teacher(e.teacher)
        models = [
            ExperimentModel("teacher", f"teacher ({volume.name}, not trained here)", [], volume)
        ]
    else:
        models = [ExperimentModel("teacher", "well-trained teacher", [trained["teacher"]])]
    models += [
        ExperimentModel(f"limit-{n}", "limit-trained teacher", [m])
        for n, m in zip(subsets, limit, strict=True)
    ]
    if limit:
        models.append(
            ExperimentModel("ensemble-limit", "ensemble of limit-trained teachers", limit)
        )
    models += [
        ExperimentModel("student-nokd", "student without KD", [nokd]),
        ExperimentModel("student-kd-p1", "student, procedure 1", [p1]),
    ]
    models += [
        ExperimentModel(f"student-kd-p2-{s}", f"student, procedure 2 ({s})", [m])
        for s, m in p2.items()
    ]
    if not context.distributed:  # evaluation as the steps ran: thread count fixes the sums
        torch.set_num_threads(threads_per_job(config.train.threads, jobs))
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
    teacher = next(r for r in rows if r["model"] == "teacher")["dice"]["mean"]
    return {
        "rows": rows,
        "limit_subsets": {k: len(v) for k, v in subsets.items()},
        "strategy_selected_on_validation": chosen,
        "strategies_skipped": skipped,
        "teacher_gap": teacher - nokd["mean"],
        "comparisons": _comparisons(evaluated, chosen),
        "test_cases": evaluated[0].summary["overall"]["dice"]["n"],
        "config": config.to_dict(),
    }


# (name, model a, model b): "chosen" is the procedure-2 student chosen on validation.
COMPARISONS = (
    ("p1 vs no-KD", "student-kd-p1", "student-nokd"),
    ("chosen p2 vs no-KD", "chosen", "student-nokd"),
    ("chosen p2 vs uniform", "chosen", "student-kd-p2-uniform"),
    ("chosen p2 vs p1", "chosen", "student-kd-p1"),
)


def case_dice(evaluation_dir: Path) -> dict[str, float]:
    """Test Dice per case (case id -> Dice) from an evaluation's ``metrics.csv``."""
    with open(Path(evaluation_dir) / "metrics.csv", newline="") as handle:
        return {row["case"]: float(row["dice"]) for row in csv.DictReader(handle)}


def paired_scores(
    dice: dict[str, dict[str, float]], chosen: str | None
) -> dict[str, tuple[str, str, list[float], list[float]]]:
    """For each of :data:`COMPARISONS` whose models were evaluated: the names of models a
    ("chosen" resolved) and b, and their Dice over the same cases, in one order."""
    pairs = {}
    for label, a, b in COMPARISONS:
        a = chosen if a == "chosen" else a
        if a in dice and b in dice and a != b:
            cases = sorted(dice[a])
            pairs[label] = (a, b, [dice[a][c] for c in cases], [dice[b][c] for c in cases])
    return pairs


def _comparisons(evaluated: list[EvaluatedModel], chosen: str | None) -> dict[str, Any]:
    """Paired per-volume test-Dice comparisons (difference a - b) of the protocol's models."""
    pairs = paired_scores({m.name: m.dice for m in evaluated}, chosen)
    return {
        label: {"a": a, "b": b, **paired_comparison(scores_a, scores_b)}
        for label, (a, b, scores_a, scores_b) in pairs.items()
    }
