"""The protocol's steps: which models an experiment trains, with which roles, teachers and
data, in the order one job runs them; no experiment is run here."""

import pytest

from prokd.errors import ConfigError
from prokd.evaluation.roles import LIMIT_TEACHER, STUDENT_NOKD, STUDENT_P1, STUDENT_P2, TEACHER
from prokd.training.config import config_from_dict, load_config
from prokd.training.plan import plan_steps
from tests.conftest import CONFIGS

SUBSETS = {"SiteA": ("a1", "a2"), "SiteB": ("b1",)}


def test_the_demo_protocol_in_order_with_roles_and_teachers():
    config = load_config(CONFIGS / "demo.yaml")
    steps = plan_steps(config, SUBSETS, limit_val_known=True)
    names = [s.name for s in steps]
    assert names[:5] == ["teacher", "limit-SiteA", "limit-SiteB", "student-nokd", "student-kd-p1"]
    assert names[-2:] == ["student-kd-best-teacher", "student-self-training"]
    by_name = {s.name: s for s in steps}
    assert by_name["teacher"].role == TEACHER and by_name["limit-SiteB"].role == LIMIT_TEACHER
    assert by_name["limit-SiteA"].case_ids == ("a1", "a2")
    assert by_name["student-nokd"].role == STUDENT_NOKD and by_name["student-nokd"].centre
    p1 = by_name["student-kd-p1"]
    assert p1.role == STUDENT_P1 and p1.teachers == ("teacher",) and not p1.centre
    for strategy in config.experiment.strategies:
        p2 = by_name[f"student-kd-p2-{strategy}"]
        assert p2.role == STUDENT_P2 and p2.teachers == ("limit-SiteA", "limit-SiteB")
        assert p2.teacher_sites == ("SiteA", "SiteB") and p2.teacher_cases == (
            ("a1", "a2"),
            ("b1",),
        )
    # every step's teachers come before it
    for index, step in enumerate(steps):
        assert set(step.teachers) <= set(names[:index]), step.name


def test_validation_weighting_needs_validation_scores_and_a_volume_teacher_trains_none():
    config = load_config(CONFIGS / "demo.yaml").replace(
        experiment={"strategies": ("uniform", "validation")}
    )
    with_scores = [s.name for s in plan_steps(config, SUBSETS, limit_val_known=True)]
    without = [s.name for s in plan_steps(config, SUBSETS, limit_val_known=False)]
    assert "student-kd-p2-validation" in with_scores and "student-kd-p2-validation" not in without
    external = config.replace(experiment={"teacher": "taps"})
    steps = {s.name: s for s in plan_steps(external, SUBSETS, limit_val_known=True)}
    assert "teacher" not in steps
    assert (
        steps["student-kd-p1"].volume_teachers == ("taps",) and not steps["student-kd-p1"].teachers
    )


def test_p2_teacher_puts_the_generic_teacher_beside_the_limit_trained_ones():
    """experiment.p2_teacher: procedure 2's students also learn from experiment.teacher, a
    trained step or a volume teacher; weightings that need a teacher's site are refused,
    and validation weighting is not planned with a volume teacher (it has no score)."""
    config = load_config(CONFIGS / "demo.yaml").replace(
        experiment={"strategies": ("uniform", "validation"), "p2_teacher": True}
    )
    steps = {s.name: s for s in plan_steps(config, SUBSETS, limit_val_known=True)}
    p2 = steps["student-kd-p2-validation"]
    assert p2.teachers == ("limit-SiteA", "limit-SiteB", "teacher") and not p2.volume_teachers
    assert p2.teacher_sites == () and p2.teacher_cases == ()
    external = config.replace(experiment={"teacher": "taps"})
    steps = {s.name: s for s in plan_steps(external, SUBSETS, limit_val_known=True)}
    assert "student-kd-p2-validation" not in steps
    p2 = steps["student-kd-p2-uniform"]
    assert p2.teachers == ("limit-SiteA", "limit-SiteB") and p2.volume_teachers == ("taps",)
    values = config.to_dict()
    values["experiment"]["centre_site"] = None
    for experiment, message in (
        ({"strategies": ["uniform", "site"]}, "the site weighting needs each teacher's site"),
        ({"strategies": []}, "needs procedure 2"),
    ):
        values["experiment"].update(experiment)
        with pytest.raises(ConfigError, match=f"experiment.p2_teacher: {message}"):
            config_from_dict(values)
