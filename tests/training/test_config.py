import pytest
import yaml

from prokd.errors import ConfigError
from prokd.training.config import Config, config_from_dict, load_config, save_config


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_and_partial_override(tmp_path):
    config = load_config(_write(tmp_path, "train:\n  epochs: 3\nloss: {kl: 0.5}\n"))
    assert config.train.epochs == 3 and config.train.batch_size == Config().train.batch_size
    assert config.loss.kl == 0.5 and config.loss.dice == 1.0
    assert config.preprocess.size == 128


def test_save_load_roundtrip(tmp_path):
    config = config_from_dict(
        {
            "model": "enet",
            "preprocess": {"size": 64, "fov_mm": 100},
            "experiment": {"strategies": ["uniform", "confidence"]},
        }
    )
    again = load_config(save_config(config, tmp_path / "saved.yaml"))
    assert again == config
    assert again.experiment.strategies == ("uniform", "confidence")


@pytest.mark.parametrize(
    "text,message",
    [
        ("trian:\n  epochs: 3\n", "trian: unknown key"),
        ("train:\n  epoch: 3\n", "train.epoch: unknown key"),
        ("train:\n  epochs: ten\n", "train.epochs: expected an integer, got 'ten'"),
        ("train:\n  epochs: 2.5\n", "train.epochs: expected an integer"),
        ("train:\n  augment: 1\n", "train.augment: expected true or false"),
        ("train:\n  epochs: 0\n", "train.epochs: must be at least 1"),
        ("train:\n  foreground_fraction: 1.5\n", "train.foreground_fraction: must be in [0, 1]"),
        ("loss:\n  temperature: -1\n", "loss.temperature: must be positive"),
        ("loss:\n  feature_norm: layer\n", "loss.feature_norm: must be one of 'pixel', 'channel'"),
        ("preprocess:\n  size: 4\n", "preprocess.size must be at least 8"),
        (
            "preprocess:\n  clip_percentiles: [1]\n",
            "preprocess.clip_percentiles: expected a list of 2",
        ),
        ("experiment:\n  strategies: uniform\n", "experiment.strategies: expected a list"),
        ("train: 3\n", "train.: expected a mapping"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML \(line \d+\)"):
        load_config(_write(tmp_path, "train:\n  epochs: [1\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_repository_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"demo.yaml", "paper-six-site.yaml", "prostate158.yaml"}
    for path in configs:
        load_config(path)


def test_names_are_checked_when_the_config_is_loaded(tmp_path):
    path = tmp_path / "c.yaml"
    for text, message in (
        ("data: {layout: six_site}\n", "data.layout: unknown layout"),
        ("distill: {weighting: loud}\n", "distill.weighting: unknown teacher weighting"),
        ("experiment: {student: tiny}\n", "experiment.student: unknown model"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_keys_a_command_ignores_are_reported(tmp_path):
    from prokd.errors import DataWarning

    path = tmp_path / "c.yaml"
    path.write_text("model: unet-w4\ndistill: {weighting: confidence, soft_target_cache: true}\n")
    with pytest.warns(DataWarning) as caught:
        load_config(path, ignored=("model", "distill.teachers", "distill.weighting"))
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        f"{path}: distill.weighting is ignored by this command",
        f"{path}: model is ignored by this command",
    ]


def test_cli_prints_an_ignored_key_as_one_warning_line(tmp_path, capsys):
    from prokd.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("experiment: {student: unet-w4}\n")
    assert main(["train", str(path), "--out", str(tmp_path / "r")]) == 2  # no data folder
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"prokd train: warning: {path}: experiment.student is ignored by this command"
    assert "data.root is not set" in err[1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"unlabelled_share": 1.0}}, "train.unlabelled_share: must be in"),
        ({"split": {"labelled_per_site": -1}}, "split.labelled_per_site: must be >= 0"),
        ({"distill": {"confidence_temperature": 0}}, "distill.confidence_temperature: must be"),
        ({"data": {"unlabelled": "scans"}}, "data.unlabelled: expected a list"),
    ],
)
def test_small_data_keys_are_checked(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_strategy_temperatures_come_from_the_config():
    distill = config_from_dict({"distill": {"label_aware_temperature": 0.5}}).distill
    assert distill.temperature("label-aware") == 0.5
    assert distill.temperature("confidence") == 0.1
    assert distill.temperature("uniform") is None


def test_a_saved_config_from_before_a_setting_existed_is_the_same_config(tmp_path):
    """A run folder's config.yaml lacking a newer setting reads with its default: resuming
    with the same config is allowed, a changed value is not."""
    from prokd.training.runs import saved_config_differs

    config = config_from_dict({"train": {"epochs": 3}})
    values = config.to_dict()
    del values["preprocess"]["context_slices"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    assert not saved_config_differs(tmp_path, config)
    assert saved_config_differs(tmp_path, config.replace(train={"epochs": 4}))


def test_repository_study_files_are_valid():
    """Every committed study file loads: its base, regimes, folds and contrasts."""
    from pathlib import Path

    from prokd.training.study import load_study

    studies = sorted((Path(__file__).parents[2] / "configs" / "studies").glob("*.yaml"))
    assert {p.name for p in studies} >= {"kd-study.yaml", "loso-bank.yaml"}
    for path in studies:
        assert load_study(path).cells, path
