"""What a step's reuse and an evaluation's reuse depend on: the localiser's contents too,
where it places the grids (a retrained localiser places them elsewhere); unlabelled data
only where teachers use it."""

import dataclasses
import json

from prokd.data.splits import Split
from prokd.inference.trained import BEST
from prokd.training.config import config_from_dict
from prokd.training.reuse import STEP_KEY, find_twin, step_key
from prokd.training.run_log import SUMMARY
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


def test_unlabelled_data_keys_distilled_steps_only(tmp_path):
    """A step without teachers never sees unlabelled data: two configs that differ only in
    their unlabelled sources give its model one key (a no-KD student is reused across
    regimes that change the view bank), a distilled step two; a key saved with the
    unlabelled sources in it still finds its twin."""
    job = tiny_job(tmp_path / "run")
    labelled = {"root": "data/a"}
    bank = {"root": "runs/bank", "labelled": False, "bank": True}
    plain = config_from_dict({"data": {"sources": [labelled]}})
    banked = config_from_dict({"data": {"sources": [labelled, bank], "unlabelled": ["u"]}})
    assert step_key(job, plain, SPLIT, "uniform", []) == step_key(job, banked, SPLIT, "uniform", [])
    taught = dataclasses.replace(job, volume_teachers=["taps"])
    assert step_key(taught, plain, SPLIT, "uniform", []) != step_key(
        taught, banked, SPLIT, "uniform", []
    )
    run = tmp_path / "old" / "models" / "student-nokd"
    run.mkdir(parents=True)
    (run / SUMMARY).write_text("{}")
    (run / BEST).write_bytes(b"")
    saved = step_key(job, banked, SPLIT, "uniform", [])
    saved["data"] = dataclasses.asdict(banked.data)  # as keys were saved before the rule
    (run / STEP_KEY).write_text(json.dumps({"key": json.loads(json.dumps(saved))}))
    key = step_key(job, plain, SPLIT, "uniform", [])
    assert find_twin("student-nokd", key, (tmp_path / "old",)) == tmp_path / "old"
