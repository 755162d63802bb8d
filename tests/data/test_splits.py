from pathlib import Path

import pytest

from prokd.data.layouts import Case
from prokd.data.splits import (
    Split,
    held_out_case,
    held_out_site,
    hold_back_labels,
    leave_one_site_out,
    limit_trained_subsets,
    split_by_site,
)
from prokd.errors import ConfigError


def _cases(sites=("A", "B", "C"), per_site=10):
    return [
        Case(f"{s}/Case{i:02d}", s, Path("x"), (Path("y"),)) for s in sites for i in range(per_site)
    ]


def _assert_disjoint_cover(split, cases):
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == {c.case_id for c in cases}


def test_split_by_site_is_disjoint_per_site_and_seeded():
    cases = _cases()
    split = split_by_site(cases, 0.2, 0.2, seed=1)
    _assert_disjoint_cover(split, cases)
    for site in "ABC":
        assert sum(cid.startswith(site) for cid in split.test) == 2
        assert sum(cid.startswith(site) for cid in split.val) == 2
    assert split_by_site(cases, 0.2, 0.2, seed=1) == split
    assert split_by_site(cases, 0.2, 0.2, seed=2) != split


def test_patients_stay_together():
    cases = _cases(per_site=6)
    cases += [
        Case("A/s6", "A", Path("x"), (Path("y"),), group="P1"),
        Case("A/s10", "A", Path("x"), (Path("y"),), group="P1"),
    ]
    for seed in range(10):
        split = split_by_site(cases, 0.3, 0.3, seed=seed)
        part_of = {cid: name for name in ("train", "val", "test") for cid in getattr(split, name)}
        assert part_of["A/s6"] == part_of["A/s10"]


def test_small_sites_keep_a_training_case():
    split = split_by_site(_cases(per_site=2), 0.2, 0.2)
    assert len(split.train) == 6 and not split.val and not split.test


def test_split_save_load_roundtrip(tmp_path):
    split = split_by_site(_cases(), 0.2, 0.2)
    assert Split.load(split.save(tmp_path / "split.json")) == split


def test_bad_fractions():
    with pytest.raises(ConfigError, match="split fractions"):
        split_by_site(_cases(), 0.5, 0.5)


def test_leave_one_site_out():
    cases = _cases()
    splits = leave_one_site_out(cases)
    assert sorted(splits) == ["A", "B", "C"]
    for site, split in splits.items():
        _assert_disjoint_cover(split, cases)
        assert all(cid.startswith(site) for cid in split.test) and len(split.test) == 10
        assert not any(cid.startswith(site) for cid in split.train + split.val)


def test_limit_trained_subsets_per_site_are_disjoint():
    cases = _cases()
    split = split_by_site(cases, 0.2, 0.2)
    subsets = limit_trained_subsets(cases, split.train, mode="site")
    assert sorted(subsets) == ["A", "B", "C"]
    seen = [cid for ids in subsets.values() for cid in ids]
    assert len(seen) == len(set(seen)) and set(seen) == set(split.train)
    assert all(cid.startswith(site) for site, ids in subsets.items() for cid in ids)


def test_limit_trained_random_subsets_are_disjoint_and_sized():
    cases = _cases()
    train = tuple(c.case_id for c in cases)
    subsets = limit_trained_subsets(cases, train, mode="random", k=4, fraction=0.2, seed=3)
    assert len(subsets) == 4 and all(len(ids) == 6 for ids in subsets.values())
    seen = [cid for ids in subsets.values() for cid in ids]
    assert len(seen) == len(set(seen))
    again = limit_trained_subsets(cases, train, mode="random", k=4, fraction=0.2, seed=3)
    assert again == subsets


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"mode": "lottery"}, "unknown mode"),
        ({"mode": "random", "k": 0}, "at least 1"),
        ({"mode": "random", "k": 3, "fraction": 0.5}, "exceed"),
    ],
)
def test_limit_trained_subset_errors(kwargs, word):
    cases = _cases()
    with pytest.raises(ConfigError, match=word):
        limit_trained_subsets(cases, tuple(c.case_id for c in cases), **kwargs)


def test_hold_back_labels_keeps_n_patients_per_site_and_moves_the_rest():
    cases = _cases(per_site=8)
    cases += [Case("A/p1", "A", Path("x"), (Path("y"),), group="P")]
    cases += [Case("A/p2", "A", Path("x"), (Path("y"),), group="P")]
    split = split_by_site(cases, 0.2, 0.2, seed=0)
    small = hold_back_labels(cases, split, 2, seed=0)
    assert (small.val, small.test) == (split.val, split.test)
    assert set(small.train) | set(small.unlabelled) == set(split.train)
    assert not set(small.train) & set(small.unlabelled)
    patient = {c.case_id: c.patient for c in cases}
    for site in "ABC":
        kept = {patient[i] for i in small.train if i.startswith(site)}
        assert len(kept) == 2
    # a patient's cases are labelled together or held back together
    assert ({"A/p1", "A/p2"} <= set(small.train)) or not ({"A/p1", "A/p2"} & set(small.train))
    assert hold_back_labels(cases, split, 2, seed=0) == small
    assert hold_back_labels(cases, split, 100, seed=0).unlabelled == ()
    with pytest.raises(ConfigError, match="labelled_per_site"):
        hold_back_labels(cases, split, 0)


def test_held_out_site_tests_on_that_site_only():
    cases = _cases()
    split = held_out_site(cases, "B", 0.2, seed=0)
    assert set(split.test) == {c.case_id for c in cases if c.site == "B"}
    assert not any(i.startswith("B/") for i in split.train + split.val)
    with pytest.raises(ConfigError, match="unknown site 'Z'"):
        held_out_site(cases, "Z")


def test_held_out_case_tests_on_that_patient_only():
    cases = _cases(per_site=4) + [
        Case("A/s6", "A", Path("x"), (Path("y"),), group="P1"),
        Case("A/s10", "A", Path("x"), (Path("y"),), group="P1"),
    ]
    split = held_out_case(cases, "A/s10", 0.25, seed=0)
    assert split.test == ("A/s10", "A/s6")  # both acquisitions of the patient
    _assert_disjoint_cover(split, cases)
    for site in "ABC":
        assert sum(cid.startswith(site) for cid in split.val) == 1
    assert held_out_case(cases, "B/Case01", 0.25).test == ("B/Case01",)
    with pytest.raises(ConfigError, match="unknown case 'Z/1'"):
        held_out_case(cases, "Z/1")


def test_split_with_unlabelled_part_round_trips(tmp_path):
    split = Split(("a",), ("b",), ("c",), ("d", "e"))
    assert Split.load(split.save(tmp_path / "s.json")) == split
