"""The protocol's training steps: which models an experiment trains, each with its role,
network, data and teachers, in the order ``--jobs 1`` runs them."""

from __future__ import annotations

from dataclasses import dataclass

from prokd.evaluation.roles import (
    LIMIT_TEACHER,
    STUDENT_BEST_TEACHER,
    STUDENT_NOKD,
    STUDENT_P1,
    STUDENT_P2,
    STUDENT_ROLES,
    STUDENT_SELF,
    TEACHER,
)
from prokd.inference.volume_models import is_volume_model
from prokd.training.config import Config


@dataclass(frozen=True)
class Step:
    """One model to train: its run name, network, role, data, teachers and weighting.

    ``teachers`` names earlier steps; a step may start once they are finished.
    ``volume_teachers`` are teachers prokd does not train (see
    :mod:`prokd.inference.volume_models`). ``centre``: the step trains at the centre site of
    the site-teacher regime (its labels only; the other training volumes without masks).
    ``best_teacher``: the step learns from the one of ``teachers`` with the best validation
    Dice. ``teacher_sites``: the site each of ``teachers`` was trained at (limit_mode
    ``site``), for the ``site`` weighting. ``teacher_cases``: the case ids each of
    ``teachers`` was trained on, for the ``gate`` weighting.
    """

    name: str
    model: str
    role: str
    case_ids: tuple[str, ...] | None = None
    teachers: tuple[str, ...] = ()
    weighting: str = "uniform"
    soft_targets: str | None = None  # name of the shared soft-target cache, if any
    volume_teachers: tuple[str, ...] = ()
    centre: bool = False
    best_teacher: bool = False
    teacher_sites: tuple[str, ...] = ()  # the site of each teacher, when each has one
    teacher_cases: tuple[tuple[str, ...], ...] = ()  # each teacher's training cases, if known

    @property
    def student(self) -> bool:
        """Whether the step trains a student (trained with the student's settings)."""
        return self.role in STUDENT_ROLES


def plan_steps(
    config: Config, subsets: dict[str, tuple[str, ...]], limit_val_known: bool
) -> list[Step]:
    """Every training step of the protocol, in the order ``--jobs 1`` runs them.

    ``validation`` weighting is planned only when every procedure-2 teacher has a
    validation score (``limit_val_known``; a volume teacher has none). In the site-teacher regime
    (``experiment.centre_site``) every student but procedure 1's trains at the centre;
    procedure 1 keeps the pooled labels, the upper bound that privacy forbids.
    """
    e = config.experiment
    centre = e.centre_site is not None
    limit = tuple(f"limit-{name}" for name in subsets)
    sites = tuple(subsets) if e.limit_mode == "site" else ()  # per-site subsets: named by site
    external = is_volume_model(e.teacher)  # procedure 1 from a model prokd did not train
    steps = [] if external else [Step("teacher", e.teacher, TEACHER)]
    steps += [
        Step(f"limit-{name}", e.limit_teacher, LIMIT_TEACHER, case_ids=ids)
        for name, ids in subsets.items()
    ]
    steps.append(Step("student-nokd", e.student, STUDENT_NOKD, centre=centre))
    if external:
        steps.append(Step("student-kd-p1", e.student, STUDENT_P1, volume_teachers=(e.teacher,)))
    else:
        steps.append(
            Step("student-kd-p1", e.student, STUDENT_P1, teachers=("teacher",), soft_targets="p1")
        )
    # p2_teacher: the generic teacher beside the limit-trained ones (it has no site, no cases)
    p2_teachers = (*limit, "teacher") if e.p2_teacher and not external else limit
    p2_volume_teachers = (e.teacher,) if e.p2_teacher and external else ()
    steps += [
        Step(
            f"student-kd-p2-{s}",
            e.student,
            STUDENT_P2,
            None,
            p2_teachers,
            s,
            "p2",
            volume_teachers=p2_volume_teachers,
            centre=centre,
            teacher_sites=() if e.p2_teacher else sites,
            teacher_cases=() if e.p2_teacher else tuple(subsets.values()),
        )
        for s in e.strategies
        if s != "validation" or (limit_val_known and not p2_volume_teachers)
    ]
    if "best-teacher" in e.baselines:
        steps.append(
            Step(
                "student-kd-best-teacher",
                e.student,
                STUDENT_BEST_TEACHER,
                teachers=limit,
                centre=centre,
                best_teacher=True,
            )
        )
    if "self-training" in e.baselines:
        steps.append(
            Step(
                "student-self-training",
                e.student,
                STUDENT_SELF,
                teachers=("student-nokd",),
                soft_targets="self",
                centre=centre,
            )
        )
    return steps
