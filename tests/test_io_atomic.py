"""Atomic writes leave nothing behind; temporaries of a killed process are swept."""

import pytest

from prokd.errors import DataError
from prokd.io_atomic import atomic_path, remove_stale_temporaries, temporary_name


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_folder_in_the_way_is_a_one_line_error(tmp_path):
    (tmp_path / "x").write_text("a file")
    with (
        pytest.raises(DataError, match="x/a.json: cannot write"),
        atomic_path(tmp_path / "x" / "a.json"),
    ):
        pass


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    keep = tmp_path / "models" / "best.pt"
    keep.parent.mkdir()
    keep.write_text("ok")
    (tmp_path / "models" / f"{temporary_name(keep)}abc123.pt").write_text("killed mid-write")
    stale_folder = tmp_path / f"{temporary_name(tmp_path / 'soft')}xyz"
    stale_folder.mkdir()
    (stale_folder / "teacher0_logits.npy").write_text("partial")
    (tmp_path / ".hidden-user-file").write_text("not ours")
    assert remove_stale_temporaries(tmp_path) == 2
    remaining = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert remaining == [".hidden-user-file", "models", "models/best.pt"]
