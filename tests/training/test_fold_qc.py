"""The QC level nested in folds: each fold's level is read from its validation volumes only
(its test volumes, the held-out source, never move it), and the test rates are each fold's
counts at its own level, added (checked against counts made by hand)."""

from prokd.training.fold_qc import nested_qc


def _row(role: str, dice: float, mirror: float) -> dict:
    signals = {"gland_ml": 30.0, "mirror_dice": mirror, "localiser_found": True}
    return {"role": role, "case": f"{role}-{dice}-{mirror}", "dice": dice, "signals": signals}


def _folds(test_dice: float) -> dict[str, list[dict]]:
    return {
        # A: a failed mask whose mirror disagrees (0.75) and good masks that agree (0.95):
        # level 2 (mirror limit 0.8) catches it with no false alarm, and is the prior.
        "A": [
            _row("val", 0.3, 0.75),
            _row("val", 0.9, 0.95),
            _row("val", 0.9, 0.95),
            _row("test", test_dice, 0.75),
            _row("test", 0.9, 0.95),
        ],
        # B: good masks whose mirrors agree only at 0.65: every level above 0 (limit 0.6)
        # raises false alarms on all of them, so level 0.
        "B": [
            _row("val", 0.9, 0.65),
            _row("val", 0.85, 0.65),
            _row("test", test_dice, 0.65),
            _row("test", 0.9, 0.65),
        ],
    }


def test_each_fold_is_judged_at_the_level_its_validation_volumes_chose():
    qc = nested_qc(_folds(test_dice=0.2))
    assert qc["fold_levels"] == {"A": 2, "B": 0}
    assert qc["validation_volumes"] == {"A": 3, "B": 2}
    nested = qc["nested"]
    # A at level 2: its failed test mask (mirror 0.75 < 0.8) caught, its good one passes;
    # B at level 0: its failed test mask (mirror 0.65 >= 0.6) passes, its good one too.
    assert (nested["volumes"], nested["failed"], nested["caught"]) == (4, 2, 1)
    assert (nested["good"], nested["false_alarms"]) == (2, 0)
    # at the prior level (2) B's good test mask is a false alarm and its failure caught
    prior = qc["prior"]
    assert (prior["caught"], prior["false_alarms"]) == (2, 1)


def test_the_held_out_volumes_never_move_a_folds_level():
    levels = {nested_qc(_folds(test_dice=d))["fold_levels"]["A"] for d in (0.0, 0.3, 0.7, 0.95)}
    assert levels == {2}
