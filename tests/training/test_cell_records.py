"""A study cell's record: kept whole, restored only where the run folder lacks the cell."""

import pytest

from prokd.errors import DataError
from prokd.training.cell_records import keep_cell, record_files, restore_cell


def _cell(folder, results="{}"):
    (folder / "evaluation" / "student").mkdir(parents=True)
    (folder / "evaluation" / "student" / "metrics.csv").write_text("case,dice\na,0.5\n")
    (folder / "evaluation" / "student" / "prediction.nii.gz").write_bytes(b"big")
    (folder / "models" / "student").mkdir(parents=True)
    (folder / "models" / "student" / "last.pt").write_bytes(b"weights")
    (folder / "config.yaml").write_text("model: unet-w8\n")
    if results is not None:
        (folder / "results.json").write_text(results)
    return folder


def test_a_record_holds_what_the_summary_reads_and_no_model(tmp_path):
    cell = _cell(tmp_path / "cell")
    keep_cell(cell, tmp_path / "kept")
    assert sorted(map(str, record_files(tmp_path / "kept"))) == [
        "config.yaml",
        "evaluation/student/metrics.csv",
        "results.json",
    ]
    assert not (tmp_path / "kept" / "models").exists()


def test_an_unfinished_cell_is_not_kept(tmp_path):
    cell = _cell(tmp_path / "cell", results=None)
    with pytest.raises(DataError, match="cell.*not a finished cell"):
        keep_cell(cell, tmp_path / "kept")
    assert not (tmp_path / "kept").exists()


def test_restore_fills_only_a_cell_the_run_folder_lacks(tmp_path):
    keep_cell(_cell(tmp_path / "cell", results='{"kept": 1}'), tmp_path / "kept")
    finished = _cell(tmp_path / "finished", results='{"here": 1}')
    assert not restore_cell(tmp_path / "kept", finished)
    assert (finished / "results.json").read_text() == '{"here": 1}'
    partial = _cell(tmp_path / "partial", results=None)  # a killed run's folder
    assert restore_cell(tmp_path / "kept", partial)
    assert (partial / "results.json").read_text() == '{"kept": 1}'
    assert not restore_cell(tmp_path / "nothing", tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
