"""``prokd experiment``: the whole protocol, resumable step by step.

splits -> well-trained teacher and limit-trained teachers -> no-KD student -> procedure 1
(teacher -> student) -> procedure 2 (limit-trained teachers -> student, one run per weighting
strategy) -> evaluation of every model (and of the limit-trained ensemble) on the test cases
per 3D volume and per site -> ``results.json`` and ``report.md``. Finished steps are skipped.

The steps are planned in :mod:`prokd.training.plan`, twins reused through
:mod:`prokd.training.reuse`, results assembled in :mod:`prokd.training.results`, and
``--jobs`` scheduled by :mod:`prokd.training.parallel`.
"""

from __future__ import annotations

import json
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from prokd.data.cache import PreprocessedVolume
from prokd.data.splits import limit_trained_subsets
from prokd.errors import ConfigError
from prokd.evaluation.evaluate import evaluate_cases, write_evaluation
from prokd.evaluation.report import build_report
from prokd.evaluation.roles import (
    ENSEMBLE,
    LIMIT_TEACHER,
    ROLE_TEXT,
    STUDENT_P2,
    STUDENT_ROLES,
    TEACHER,
)
from prokd.inference.trained import TrainedModel, load_trained_model
from prokd.inference.volume_models import (
    SharedSlices,
    VolumeModel,
    load_volume_model,
)
from prokd.io_atomic import atomic_path, remove_stale_temporaries
from prokd.training.checkpoints import LAST
from prokd.training.config import Config, config_from_dict
from prokd.training.distributed import ONE_PROCESS, Context
from prokd.training.experiment_models import ExperimentModel, best_on_validation
from prokd.training.job import TrainJob
from prokd.training.loop import build_soft_targets, run_training
from prokd.training.parallel import run_dependent
from prokd.training.plan import Step, plan_steps
from prokd.training.results import EvaluatedModel, case_dice, experiment_results
from prokd.training.reuse import (
    copy_folder,
    copy_twin,
    evaluated,
    find_evaluation,
    find_twin,
    save_step_key,
    step_key,
)
from prokd.training.run_log import best_val_dice, training_finished
from prokd.training.runs import (
    PreparedData,
    prepare_data,
    saved_config_differs,
    write_run_metadata,
)

OVERLAY_CASES = 3
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice for this machine


def threads_per_job(configured: int, jobs: int) -> int:
    """``train.threads`` when set, else an equal share of torch's default thread count."""
    return configured or max(1, DEFAULT_THREADS // jobs)


class Experiment:
    """The protocol's steps over one prepared dataset and run folder: each step's training
    job, training (or reuse of a twin), and the evaluation of the trained models."""

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
        self._volume_models: dict[str, VolumeModel] = {}

    @cached_property
    def train_volumes(self) -> list[PreprocessedVolume]:
        """The training split, preprocessed (from the cache when there)."""
        return self.data.volumes(self.data.split.train, "preprocess train")

    @cached_property
    def val_volumes(self) -> list[PreprocessedVolume]:
        """The validation split, preprocessed."""
        return self.data.volumes(self.data.split.val, "preprocess val")

    @cached_property
    def unlabelled_volumes(self) -> list[PreprocessedVolume]:
        """The unlabelled volumes the distilled students see, preprocessed."""
        return self.data.unlabelled_volumes()

    def trained(self, name: str) -> TrainedModel:
        """The trained model of a finished step."""
        return load_trained_model(self.out / "models" / name, self.context.device)

    def soft_target_dir(self, step: Step) -> Path | None:
        """Where a step's shared soft-target cache lives (``None``: teachers run live)."""
        if step.soft_targets and self.config.distill.soft_target_cache:
            return self.out / "soft_targets" / step.soft_targets
        return None

    def at_centre(
        self, volumes: list[PreprocessedVolume], unlabelled: list[PreprocessedVolume]
    ) -> tuple[list[PreprocessedVolume], list[PreprocessedVolume]]:
        """What a student at the centre site sees: that site's labelled volumes, and the
        other sites' training volumes (masks dropped) beside the unlabelled ones.

        Raises:
            ConfigError: no training volume comes from the centre site.
        """
        site = self.config.experiment.centre_site
        own = [v for v in volumes if v.site == site]
        if not own:
            sites = ", ".join(sorted({v.site for v in volumes}))
            raise ConfigError(
                f"experiment.centre_site: no labelled training case from {site!r} "
                f"(training sites: {sites})"
            )
        others = [v.without_mask() for v in volumes if v.site != site]
        return own, unlabelled + others

    def volume_model(self, spec: str) -> VolumeModel:
        """A volume model, loaded once per experiment."""
        if spec not in self._volume_models:
            self._volume_models[spec] = load_volume_model(spec)
        return self._volume_models[spec]

    def job(self, step: Step) -> TrainJob:
        """The training job of a step, its teachers loaded from their finished steps."""
        e, cfg = self.config.experiment, self.config.train
        teachers = [self.trained(name) for name in step.teachers]
        if step.best_teacher:
            teachers = [best_on_validation(teachers)]
        volumes = self.train_volumes if step.case_ids is None else self.data.volumes(step.case_ids)
        unlabelled = self.unlabelled_volumes
        if step.centre:
            volumes, unlabelled = self.at_centre(volumes, unlabelled)
        external = [self.volume_model(spec) for spec in step.volume_teachers]
        if external:
            volumes = self.data.with_teacher_maps(volumes, external)
            unlabelled = self.data.with_teacher_maps(unlabelled, external)
        scores = [best_val_dice(t.path.parent) for t in teachers]  # volume models have none
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
            teacher_sites=list(step.teacher_sites) or None,
            teacher_cases=[frozenset(cases) for cases in step.teacher_cases] or None,
            soft_target_dir=self.soft_target_dir(step),
            unlabelled_volumes=unlabelled,
            volume_teachers=[t.name for t in external],
        )

    @property
    def placement(self) -> str | None:
        """The contents digest of the localiser that places ``gland`` grids (``None``:
        grids placed without one)."""
        locator = self.data.cache.locator
        return None if locator is None else locator.fingerprint

    def step_key(self, step: Step, job: TrainJob) -> dict[str, Any]:
        """What a step's trained model and its test evaluation depend on (see
        :func:`~prokd.training.reuse.step_key`)."""
        fingerprints = [self.volume_model(s).fingerprint() for s in step.volume_teachers]
        return step_key(
            job, self.config, self.data.split, step.weighting, fingerprints, self.placement
        )

    def twin(self, step: Step, key: dict[str, Any] | None = None) -> Path | None:
        """The experiment folder among ``reuse_from`` where a twin of ``step`` (same name,
        equal :meth:`step_key`) has finished; ``None`` if none or if the step has begun."""
        if not self.reuse_from or (self.out / "models" / step.name).exists():
            return None
        key = key if key is not None else self.step_key(step, self.job(step))
        return find_twin(step.name, key, self.reuse_from)

    def run_step(self, step: Step) -> None:
        """Train (or finish) one step's model under ``models/<name>``; skip it if done.

        A step not started yet whose twin (same name, equal :meth:`step_key`) has finished
        in one of ``reuse_from`` is copied from there, with its test evaluation.
        """
        run_dir = self.out / "models" / step.name
        if training_finished(run_dir):
            return
        job = self.job(step)
        key = self.step_key(step, job)
        twin = self.twin(step, key)
        if twin is not None:
            copy_twin(twin, self.out, step.name)
            if self.progress:
                print(f"{step.name}: reused from {twin}", flush=True)
            return
        resume = (run_dir / LAST).exists()
        run_training(job, resume=resume, progress=self.progress, context=self.context)
        if self.context.is_main:
            save_step_key(run_dir, key)

    def prepare_shared_targets(self, step: Step) -> None:
        """Build a step's shared soft-target cache in this process before it starts in a
        child (``--jobs``), so that the students sharing it do not build it twice."""
        if self.soft_target_dir(step) is not None and self.twin(step) is None:
            build_soft_targets(self.job(step), progress=False)

    def evaluate(self, models: list[ExperimentModel]) -> list[EvaluatedModel]:
        """Test-set metrics of every model (an averaged ensemble when several members).

        An evaluation on disk (``evaluation/<name>/summary.json``) is reused only while it
        records the same checkpoint contents, or copied from a folder of ``reuse_from``
        that evaluated the same model on the same test cases; a retrained model is
        evaluated again.
        """
        folders = {m.name: self.out / "evaluation" / m.name for m in models}
        todo = [
            m
            for m in models
            if not evaluated(folders[m.name] / "summary.json", m.fingerprint(self.placement))
        ]
        todo = [m for m in todo if not self._copy_evaluation(m)]
        if todo:
            cases = [self.data.case(i) for i in self.data.split.test]
            shared = SharedSlices()
            results = evaluate_cases(
                {m.name: m.evaluable(shared) for m in todo},
                cases,
                self.progress,
                overlay_cases=OVERLAY_CASES,
            )
            for m in todo:
                write_evaluation(
                    results[m.name], folders[m.name], {"checkpoints": m.fingerprint(self.placement)}
                )
        return [
            EvaluatedModel(
                m.name,
                m.role,
                m.description,
                m.params(),
                json.loads((folders[m.name] / "summary.json").read_text()),
                best_val_dice(m.members[0].path.parent) if len(m.members) == 1 else None,
                case_dice(folders[m.name]),
            )
            for m in models
        ]

    def _copy_evaluation(self, model: ExperimentModel) -> bool:
        """Copy ``model``'s evaluation from a folder of ``reuse_from``; ``False`` if none
        evaluated the same model on the same test cases."""
        source = find_evaluation(
            model.name, model.fingerprint(self.placement), self.data.split.test, self.reuse_from
        )
        if source is None:
            return False
        copy_folder(source, self.out / "evaluation" / model.name)
        if self.progress:
            print(f"evaluation of {model.name}: reused from {source.parent.parent}", flush=True)
        return True


def train_step_in_child(
    config: dict[str, Any], out: str, step: Step, threads: int, reuse_from: tuple[Path, ...]
) -> float:
    """``--jobs``: a child process rebuilds the experiment (preprocessed volumes come from
    the cache) and trains one step with ``threads`` torch threads; returns its wall time."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    resolved = config_from_dict(config)
    data = prepare_data(resolved)
    Experiment(resolved, Path(out), data, False, reuse_from=reuse_from).run_step(step)
    return time.perf_counter() - start


def train_steps(exp: Experiment, steps: list[Step], jobs: int) -> None:
    """Train every step: in order, or with ``jobs`` > 1 as parallel processes that split
    the cores, each step once its teachers are trained.

    Every step trains with its own seeds, and the evaluation after the steps runs with the
    same per-step thread count, so the numbers equal ``--jobs 1``'s when the thread count
    per step is the same (set ``train.threads`` to fix it).
    """
    if jobs <= 1:
        for step in steps:
            exp.run_step(step)
        return
    by_name = {step.name: step for step in steps}
    threads = threads_per_job(exp.config.train.threads, jobs)
    config = exp.config.to_dict()
    run_dependent(
        {step.name: step.teachers for step in steps},
        {s.name for s in steps if training_finished(exp.out / "models" / s.name)},
        jobs,
        train_step_in_child,
        lambda name: (config, str(exp.out), by_name[name], threads, exp.reuse_from),
        lambda name: exp.prepare_shared_targets(by_name[name]),
    )


def _limit_subsets(config: Config, data: PreparedData) -> dict[str, tuple[str, ...]]:
    """The limit-trained teachers' training cases (none when procedure 2 is off)."""
    e = config.experiment
    if not e.strategies:
        return {}
    return limit_trained_subsets(
        data.cases,
        data.split.train,
        e.limit_mode,
        e.limit_k,
        e.limit_fraction or None,
        config.split.seed,
    )


def models_to_evaluate(
    exp: Experiment, steps: list[Step], subsets: dict[str, tuple[str, ...]]
) -> list[ExperimentModel]:
    """Every trained model of the protocol, the ensemble of the limit-trained teachers, and
    (procedure 1 from a volume model) the volume model itself, in report order."""
    trained = {step.name: exp.trained(step.name) for step in steps}
    teacher = exp.config.experiment.teacher
    if "teacher" not in trained:  # procedure 1 from a volume model: nothing trained it
        volume = exp.volume_model(teacher)
        described = f"teacher ({volume.name}, not trained here)"
        models = [ExperimentModel("teacher", TEACHER, described, [], volume)]
    else:
        models = [ExperimentModel("teacher", TEACHER, ROLE_TEXT[TEACHER], [trained["teacher"]])]
    limit = [trained[f"limit-{name}"] for name in subsets]
    models += [
        ExperimentModel(f"limit-{n}", LIMIT_TEACHER, ROLE_TEXT[LIMIT_TEACHER], [m])
        for n, m in zip(subsets, limit, strict=True)
    ]
    if limit:
        models.append(ExperimentModel("ensemble-limit", ENSEMBLE, ROLE_TEXT[ENSEMBLE], limit))
    for step in steps:
        if step.role in STUDENT_ROLES:
            text = ROLE_TEXT[step.role].format(weighting=step.weighting)
            if step.role == STUDENT_P2 and exp.config.experiment.p2_teacher:
                text += ", with the teacher"
            models.append(ExperimentModel(step.name, step.role, text, [trained[step.name]]))
    return models


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
    if saved_config_differs(out, config):
        raise ConfigError(
            f"{out}: holds an experiment made with another config; "
            "use a new --out or the same config"
        )
    if out.is_dir() and context.is_main:
        remove_stale_temporaries(out)  # left by a killed run; this run owns the folder
    data = prepare_data(config)
    if not data.split.test:
        raise ConfigError("split.test_fraction gives no test case; raise it or add cases")
    if context.is_main:
        write_run_metadata(out, config, data)
    exp = Experiment(config, out, data, progress and context.is_main, context, reuse_from)
    subsets = _limit_subsets(config, data)
    if context.is_main:
        with atomic_path(out / "limit_subsets.json") as tmp:
            tmp.write_text(json.dumps({k: list(v) for k, v in subsets.items()}, indent=1))
    steps = plan_steps(config, subsets, limit_val_known=bool(data.split.val))
    train_steps(exp, steps, jobs)
    if not context.is_main:
        return None
    planned = {s.weighting for s in steps if s.role == STUDENT_P2}
    skipped = sorted(set(config.experiment.strategies) - planned)
    models = models_to_evaluate(exp, steps, subsets)
    # Soft targets are only needed while students train; they are large, so they go.
    shutil.rmtree(out / "soft_targets", ignore_errors=True)
    if not context.distributed:  # evaluation as the steps ran: thread count fixes the sums
        torch.set_num_threads(threads_per_job(config.train.threads, jobs))
    results = experiment_results(exp.evaluate(models), subsets, skipped, config)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    build_report(out)
    return results
