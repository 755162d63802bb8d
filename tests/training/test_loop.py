import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

import prokd.training.loop as train_module
from prokd.data.preprocess import PreprocessSettings
from prokd.data.slices import SliceDataset
from prokd.errors import ConfigError, ProkdError
from prokd.inference.trained import BEST, load_trained_model
from prokd.training.checkpoints import LAST
from prokd.training.config import config_from_dict
from prokd.training.job import TrainJob
from prokd.training.loop import run_training
from prokd.training.sampling import batch_order, sample_slices
from tests.conftest import SLICE_SETTINGS, slice_volume, tiny_job


def test_sample_slices_mixes_foreground_and_background():
    has_gland = np.array([True] * 10 + [False] * 30)
    picked = sample_slices(has_gland, 20, 0.75, np.random.default_rng(0))
    assert len(picked) == 20 and has_gland[picked].sum() == 15
    only_fg = sample_slices(np.ones(3, bool), 7, 0.5, np.random.default_rng(0))
    assert len(only_fg) == 7 and set(only_fg) <= {0, 1, 2}


def test_training_writes_checkpoints_log_and_summary(tmp_path):
    summary = run_training(tiny_job(tmp_path / "run", epochs=2), progress=False)
    assert (tmp_path / "run" / BEST).exists() and (tmp_path / "run" / LAST).exists()
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "dice", "lovasz", "val_dice", "lr"} <= set(rows[0])
    assert summary["epochs_run"] == 2 and 0 <= summary["best_val_dice"] <= 1
    model = load_trained_model(tmp_path / "run")
    assert model.name == "unet-w4" and model.settings == SLICE_SETTINGS


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    run_training(tiny_job(tmp_path / "full"), progress=False)
    original = train_module.write_log
    calls = {"n": 0}

    def crash_after_second_epoch(run_dir, history):
        original(run_dir, history)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "write_log", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_job(tmp_path / "cut"), progress=False)
    monkeypatch.setattr(train_module, "write_log", original)
    assert len(list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))) == 2
    with pytest.raises(ProkdError, match="already holds a checkpoint"):
        run_training(tiny_job(tmp_path / "cut"), progress=False)
    run_training(tiny_job(tmp_path / "cut"), resume=True, progress=False)
    full = torch.load(tmp_path / "full" / LAST, weights_only=False)
    cut = torch.load(tmp_path / "cut" / LAST, weights_only=False)
    for key, value in full["model"].items():
        torch.testing.assert_close(cut["model"][key], value, rtol=0, atol=0)
    assert [r["loss"] for r in cut["state"]["history"]] == [
        r["loss"] for r in full["state"]["history"]
    ]


def test_distillation_trains_adapters_and_leaves_teachers_untouched(tmp_path):
    run_training(tiny_job(tmp_path / "teacher", epochs=1, model="unet-w8"), progress=False)
    teachers = [load_trained_model(tmp_path / "teacher"), load_trained_model(tmp_path / "teacher")]
    before = {k: v.clone() for k, v in teachers[0].network.state_dict().items()}
    run_training(
        tiny_job(tmp_path / "student", epochs=1, teachers=teachers, weighting="confidence"),
        progress=False,
    )
    rows = list(csv.DictReader(open(tmp_path / "student" / "log.csv")))
    assert float(rows[0]["kl"]) > 0 and float(rows[0]["feature"]) > 0
    for key, value in teachers[0].network.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    saved = torch.load(tmp_path / "student" / LAST, weights_only=False)
    assert any(k.startswith("feature_loss.adapters.1.") for k in saved["criterion"])
    # the adapters were trained: their weights moved from the run's own initialisation
    # (set-up is seeded, so building it again gives exactly that initialisation)
    job = tiny_job(tmp_path / "x", teachers=teachers, weighting="confidence")
    initial = train_module._set_up(job, progress=False).criterion.state_dict()
    again = train_module._set_up(job, progress=False).criterion.state_dict()
    adapter_weights = [k for k in saved["criterion"] if "adapters" in k and k.endswith("weight")]
    assert adapter_weights
    for key in adapter_weights:
        assert torch.equal(initial[key], again[key])
        assert not torch.equal(saved["criterion"][key], initial[key]), key
    assert not any(
        "adapters" in k
        for k in torch.load(tmp_path / "student" / BEST, weights_only=False)["state_dict"]
    )


def test_soft_target_cache_gives_the_same_training_as_live_teachers(tmp_path):
    run_training(tiny_job(tmp_path / "teacher", epochs=1, model="unet-w8"), progress=False)
    teachers = [load_trained_model(tmp_path / "teacher")]
    live = tiny_job(tmp_path / "live", epochs=2, teachers=teachers, augment=False)
    run_training(live, progress=False)
    cached = tiny_job(tmp_path / "cached", epochs=2, teachers=teachers, augment=False)
    cached.soft_target_dir = tmp_path / "soft"
    run_training(cached, progress=False)
    assert (tmp_path / "soft" / "teacher0_logits.npy").exists()
    assert np.load(tmp_path / "soft" / "teacher0_logits.npy").dtype == np.float16
    a = torch.load(tmp_path / "live" / LAST, weights_only=False)["state"]["history"]
    b = torch.load(tmp_path / "cached" / LAST, weights_only=False)["state"]["history"]
    for row_a, row_b in zip(a, b, strict=True):  # float16 storage: close, not identical
        assert row_b["kl"] == pytest.approx(row_a["kl"], rel=0.02, abs=1e-3)
        assert row_b["dice"] == pytest.approx(row_a["dice"], rel=0.02, abs=1e-3)


def test_soft_target_cache_with_augmentation_needs_views(tmp_path):
    run_training(tiny_job(tmp_path / "teacher", epochs=1), progress=False)
    job = tiny_job(tmp_path / "student", teachers=[load_trained_model(tmp_path / "teacher")])
    job.soft_target_dir = tmp_path / "soft"
    with pytest.raises(ProkdError, match="needs distill.augmented_views >= 1"):
        run_training(job, progress=False)
    job.train = replace(job.train, augment=False)
    job.augmented_views = 2
    with pytest.raises(ProkdError, match="augmented_views needs train.augment: true"):
        run_training(job, progress=False)


def test_cached_views_are_exactly_the_images_the_student_sees(tmp_path, monkeypatch):
    """Consistent teaching: with augmentation on and V cached views per slice, the teacher
    outputs read for a batch are the teacher's outputs on that very augmented batch."""
    run_training(tiny_job(tmp_path / "teacher", epochs=1, model="unet-w8"), progress=False)
    teacher = load_trained_model(tmp_path / "teacher")
    job = tiny_job(tmp_path / "student", epochs=2, teachers=[teacher], augment=True)
    job.soft_target_dir, job.augmented_views = tmp_path / "soft", 3
    seen: list[torch.Tensor] = []
    fetched: list[torch.Tensor] = []
    collate, fetch = train_module.collate_slices, train_module.SoftTargetCache.fetch

    plain: list[torch.Tensor] = []

    def recording_collate(dataset, indices, seeds):
        images, labels, maps = collate(dataset, indices, seeds)
        seen.append(images.clone())
        stored = [dataset.volumes[v].image[z] for v, z in (dataset.index[i] for i in indices)]
        plain.append(torch.from_numpy(np.stack(stored)[:, None]))
        return images, labels, maps

    def recording_fetch(self, rows, device=None):
        logits, features = fetch(self, rows, device)
        fetched.append(logits[0].clone())
        return logits, features

    monkeypatch.setattr(train_module, "collate_slices", recording_collate)
    monkeypatch.setattr(train_module.SoftTargetCache, "fetch", recording_fetch)
    run_training(job, progress=False)
    slices = sum(len(v.image) for v in job.train_volumes)
    assert np.load(tmp_path / "soft" / "teacher0_logits.npy", mmap_mode="r").shape[0] == 3 * slices
    assert len(seen) == len(fetched) == 4  # 2 epochs x 2 batches
    for images, cached in zip(seen, fetched, strict=True):
        with torch.inference_mode():
            live = teacher.network(images)
        torch.testing.assert_close(cached, live, rtol=1e-2, atol=2e-2)  # float16 storage
    # the student really saw augmented views, not the stored slices
    assert any(not torch.equal(a, b) for a, b in zip(seen, plain, strict=True))


def test_early_stopping_on_validation_dice(tmp_path):
    """With lr 0 the validation Dice never improves after epoch 1: patience 1 stops at 2."""
    job = tiny_job(tmp_path / "run", epochs=6)
    job.train = replace(job.train, lr=1e-12, patience=1)
    summary = run_training(job, progress=False)
    assert summary["epochs_run"] == 2 and summary["stopped_early"]
    assert summary["best_epoch"] == 1
    assert torch.load(tmp_path / "run" / BEST, weights_only=False)["epoch"] == 1


def test_teacher_with_other_preprocessing_is_refused(tmp_path):
    from prokd.inference.trained import TrainedModel
    from prokd.models import build_model

    other = TrainedModel("unet-w4", build_model("unet-w4"), SLICE_SETTINGS, tmp_path / "t.pt")
    other.settings = PreprocessSettings(size=32, fov_mm=64.0)
    with pytest.raises(ConfigError, match=r"t.pt: teacher preprocessing differs .*fov_mm"):
        tiny_job(tmp_path / "s", teachers=[other])


def test_batch_order_puts_the_unlabelled_share_in_every_batch():
    volumes = [slice_volume(i) for i in range(3)] + [
        slice_volume(5).without_mask() for _ in range(2)
    ]
    dataset = SliceDataset(volumes)
    labelled = dataset.labelled()
    assert labelled.sum() == 12 and (~labelled).sum() == 8
    order = batch_order(dataset, 22, 8, 0.5, 0.25, np.random.default_rng(0))
    batches = [order[i : i + 8] for i in range(0, 22, 8)]
    assert [int((~labelled[b]).sum()) for b in batches] == [2, 2, 2]  # round(6 * 0.25) = 2
    assert len(order) == 22
    # Without unlabelled volumes, or with share 0, only labelled slices are drawn.
    no_share = batch_order(dataset, 16, 8, 0.5, 0.0, np.random.default_rng(0))
    assert labelled[no_share].all()
    plain = SliceDataset(volumes[:3])
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert np.array_equal(
        batch_order(plain, 10, 4, 0.6, 0.5, rng_a),
        sample_slices(plain.has_gland(), 10, 0.6, rng_b),
    )


def test_unlabelled_volumes_reach_distilled_students_only(tmp_path):
    run_training(tiny_job(tmp_path / "teacher", epochs=1, model="unet-w8"), progress=False)
    teachers = [load_trained_model(tmp_path / "teacher")]
    config = config_from_dict({"preprocess": {"size": 32, "fov_mm": 32.0}})
    unlabelled = [slice_volume(7).without_mask()]
    alone = TrainJob.from_config(
        config, tmp_path / "a", [slice_volume(0)], [], unlabelled_volumes=unlabelled
    )
    assert alone.unlabelled_volumes == []

    def student(name, volumes):
        job = TrainJob.from_config(
            config.replace(train={"epochs": 1, "batch_size": 4, "slices_per_epoch": 8}),
            tmp_path / name,
            [slice_volume(0)],
            [slice_volume(10)],
            teachers=teachers,
            weighting="label-aware",
            unlabelled_volumes=volumes,
        )
        return run_training(job, progress=False)

    summary = student("s", unlabelled)
    assert summary["unlabelled_cases"] == ["c7"] and summary["train_slices"] == 8
    # Whatever mask an unlabelled volume carries is never read: training is the same.
    garbage = [replace(unlabelled[0], mask=np.ones_like(unlabelled[0].mask))]
    student("g", garbage)
    weights = [torch.load(tmp_path / n / BEST, weights_only=False)["state_dict"] for n in "sg"]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
