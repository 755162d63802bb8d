"""The protocol's training steps: which models an experiment trains, each with its role,
network, data and teachers, in the order ``--jobs 1`` runs them."""

from __future__ import annotations

from dataclasses import dataclass

from prokd.evaluation.roles import (
    LIMIT_TEACHER,
    STUDENT_NOKD,
    STUDENT_P1,
    STUDENT_P2,
    STUDENT_ROLES,
    TEACHER,
)
from prokd.inference.volume_models import is_volume_model
from prokd.training.config import Config


@dataclass(frozen=True)
class Step:
    """One model to train: its run name, network, role, data, teachers and weighting.

    ``teachers`` names earlier steps; a step may start once they are finished.
    ``volume_teachers`` are teachers prokd does not train (see
    :mod:`prokd.inference.volume_models`).
    """

    name: str
    model: str
    role: str
    case_ids: tuple[str, ...] | None = None
    teachers: tuple[str, ...] = ()
    weighting: str = "uniform"
    soft_targets: str | None = None  # name of the shared soft-target cache, if any
    volume_teachers: tuple[str, ...] = ()

    @property
    def student(self) -> bool:
        """Whether the step trains a student (trained with the student's settings)."""
        return self.role in STUDENT_ROLES


def plan_steps(
    config: Config, subsets: dict[str, tuple[str, ...]], limit_val_known: bool
) -> list[Step]:
    """Every training step of the protocol, in the order ``--jobs 1`` runs them.

    ``validation`` weighting is planned only when the limit-trained teachers have
    validation scores (``limit_val_known``).
    """
    e = config.experiment
    limit = tuple(f"limit-{name}" for name in subsets)
    external = is_volume_model(e.teacher)  # procedure 1 from a model prokd did not train
    steps = [] if external else [Step("teacher", e.teacher, TEACHER)]
    steps += [
        Step(f"limit-{name}", e.limit_teacher, LIMIT_TEACHER, case_ids=ids)
        for name, ids in subsets.items()
    ]
    steps.append(Step("student-nokd", e.student, STUDENT_NOKD))
    if external:
        steps.append(Step("student-kd-p1", e.student, STUDENT_P1, volume_teachers=(e.teacher,)))
    else:
        steps.append(
            Step("student-kd-p1", e.student, STUDENT_P1, teachers=("teacher",), soft_targets="p1")
        )
    steps += [
        Step(f"student-kd-p2-{s}", e.student, STUDENT_P2, None, limit, s, soft_targets="p2")
        for s in e.strategies
        if s != "validation" or limit_val_known
    ]
    return steps
