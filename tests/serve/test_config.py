"""The node's settings: options and YAML keys, checked with one-line errors naming the key."""

import re
from pathlib import Path

import pytest
import yaml

from prokd.cli import main
from prokd.errors import ConfigError
from prokd.serve.config import Destination, load_node_config, node_config

BASE = {"port": 11112, "work_dir": "w", "destinations": ["PACS@pacs.local:104"]}


def test_a_destination_is_aet_at_host_colon_port():
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    assert str(Destination("PACS", "h", 4242)) == "PACS@h:4242"
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:0", "WAY_TOO_LONG_AE_TITLE@h:1"):
        with pytest.raises(ConfigError, match="--destination"):
            Destination.parse(bad)


def test_defaults_and_values():
    config = node_config(BASE)
    assert (config.ae_title, config.outputs, config.quiet_seconds, config.workers) == (
        "PROKD",
        ("seg",),
        10.0,
        1,
    )
    config = node_config({**BASE, "outputs": "seg, rtstruct,overlay", "allow": ["ORTHANC"]})
    assert config.outputs == ("seg", "rtstruct", "overlay") and config.allow == ("ORTHANC",)
    assert node_config({**BASE, "destinations": "A@h:1"}).destinations == (
        Destination("A", "h", 1),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": None}, "port is required"),
        ({"destinations": []}, "destinations is required"),
        ({"outputs": "seg,png"}, "outputs: png"),
        ({"workers": 0}, "workers: 0 is below 1"),
        ({"quiet_seconds": "soon"}, "quiet_seconds: 'soon' is not a number"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"allow": ["A\\B"]}, "allow: 'A\\\\B' is not an AE title"),
    ],
)
def test_bad_settings_name_their_key(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        node_config({k: v for k, v in {**BASE, **change}.items() if v is not None})


def test_a_yaml_file_with_options_on_top(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({**BASE, "workers": 2, "outputs": ["seg", "rtstruct"]}))
    config = load_node_config(path, {"workers": 3, "port": None, "allow": None})
    assert config.workers == 3 and config.port == 11112 and config.work_dir == Path("w")
    assert config.outputs == ("seg", "rtstruct")
    path.write_text(yaml.safe_dump({**BASE, "prot": 1}))
    with pytest.raises(ConfigError, match=f"{path}: unknown key 'prot'"):
        load_node_config(path, {})


def test_prokd_serve_without_a_destination_says_so(tmp_path, capsys):
    assert main(["serve", "--port", "11112", "--work-dir", str(tmp_path / "w")]) == 2
    assert "destinations is required" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
