"""What a step's reuse and an evaluation's reuse depend on: the localiser's contents too,
where it places the grids (a retrained localiser places them elsewhere)."""

from prokd.data.splits import Split
from prokd.training.config import config_from_dict
from prokd.training.reuse import step_key
from tests.conftest import tiny_job

SPLIT = Split(("c0", "c1", "c2"), ("c10",), ("c11",))


def test_the_step_key_holds_the_localiser_digest_where_one_places_the_grids(tmp_path):
    job = tiny_job(tmp_path / "run")
    config = config_from_dict({})
    plain = step_key(job, config, SPLIT, "uniform", [])
    assert "placement" not in plain  # keys of runs without a localiser stay as they were
    assert step_key(job, config, SPLIT, "uniform", [], None) == plain
    old = step_key(job, config, SPLIT, "uniform", [], "digest-of-the-old-localiser")
    new = step_key(job, config, SPLIT, "uniform", [], "digest-of-the-retrained-localiser")
    assert old != new and old["placement"] == "digest-of-the-old-localiser"
