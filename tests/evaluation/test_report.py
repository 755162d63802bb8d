import base64
import re

import pytest

from prokd.cli import main
from prokd.errors import DataError
from prokd.evaluation.report import build_report
from prokd.training.loop import run_training
from tests.conftest import tiny_job


def test_report_of_a_training_run(tmp_path):
    run_training(tiny_job(tmp_path / "run", epochs=2), progress=False)
    md_path, html_path = build_report(tmp_path / "run")
    text = md_path.read_text()
    assert "| epochs_run | 2 |" in text
    assert "report_files/training_curves.png" in text
    page = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1 and base64.b64decode(images[0])[:4] == b"\x89PNG"


def test_report_refuses_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(DataError, match="not a prokd run or experiment"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
