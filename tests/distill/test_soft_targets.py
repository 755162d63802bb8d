"""The soft-target cache is keyed by what the outputs depend on, and rebuilt whole."""

import json

import numpy as np
import torch

from prokd.data.preprocess import PreprocessSettings
from prokd.data.slices import SliceDataset
from prokd.distill.ensemble import TeacherEnsemble
from prokd.distill.soft_targets import MANIFEST, SoftTargetCache
from prokd.inference.trained import load_trained_model, model_payload
from prokd.models import build_model
from prokd.training.checkpoints import save_checkpoint
from tests.conftest import SLICE_SETTINGS, slice_volume


def _teacher(path, seed):
    torch.manual_seed(seed)
    save_checkpoint(model_payload(build_model("unet-w4"), "unet-w4", SLICE_SETTINGS), path)
    return load_trained_model(path)


def test_cache_is_rebuilt_when_the_checkpoint_changes_at_the_same_path(tmp_path):
    dataset = SliceDataset([slice_volume(0), slice_volume(1)])
    checkpoint = tmp_path / "teacher" / "best.pt"
    folder = tmp_path / "soft"
    first = SoftTargetCache.build(
        folder, TeacherEnsemble([_teacher(checkpoint, 0)]), dataset, SLICE_SETTINGS, progress=False
    )
    old_logits = np.array(first.logits[0])
    first_key = json.loads((folder / MANIFEST).read_text())["key"]
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    same = SoftTargetCache.build(
        folder,
        TeacherEnsemble([load_trained_model(checkpoint)]),
        dataset,
        SLICE_SETTINGS,
        progress=False,
    )
    assert (folder / MANIFEST).stat().st_mtime_ns == stamp  # reused: nothing changed
    np.testing.assert_array_equal(np.array(same.logits[0]), old_logits)

    retrained = _teacher(checkpoint, 1)  # same path, other weights
    rebuilt = SoftTargetCache.build(
        folder, TeacherEnsemble([retrained]), dataset, SLICE_SETTINGS, progress=False
    )
    expected = retrained.network(torch.from_numpy(dataset.volumes[0].image[:, None]))
    np.testing.assert_allclose(
        np.array(rebuilt.logits[0][:4], dtype=np.float32), expected.detach().numpy(), atol=2e-2
    )
    assert not np.allclose(np.array(rebuilt.logits[0]), old_logits)
    key = json.loads((folder / MANIFEST).read_text())["key"]
    assert key["teachers"] != first_key["teachers"] and key["slices"] == first_key["slices"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cache_is_rebuilt_for_other_preprocessing(tmp_path):
    dataset = SliceDataset([slice_volume(0)])
    ensemble = TeacherEnsemble([_teacher(tmp_path / "t.pt", 0)])
    folder = tmp_path / "soft"
    SoftTargetCache.build(folder, ensemble, dataset, SLICE_SETTINGS, progress=False)
    key = json.loads((folder / MANIFEST).read_text())["key"]
    other = PreprocessSettings(size=32, fov_mm=48.0)
    SoftTargetCache.build(folder, ensemble, dataset, other, progress=False)
    assert json.loads((folder / MANIFEST).read_text())["key"]["preprocess"] != key["preprocess"]
