"""Data-parallel training on CPU with 2 gloo processes (what ``torchrun`` starts)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prokd.models import build_model
from prokd.training.checkpoints import LAST
from prokd.training.distributed import Context, context_from_env
from tests.conftest import tiny_job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for value in module.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _job_for(run_dir: Path, case: str):
    """The same job in every process: supervised, or distilled with the KL term only (the
    feature adapters' batch norm sees per-rank statistics, so they would not match)."""
    if case == "supervised":
        return tiny_job(run_dir, epochs=3, augment=True)
    from prokd.data.preprocess import PreprocessSettings
    from prokd.inference.trained import load_trained_model, model_payload
    from prokd.models import build_model
    from prokd.training.checkpoints import save_checkpoint

    teacher = run_dir.parent.parent / "teacher.pt"  # shared by the one- and two-rank runs
    if not teacher.exists():
        torch.manual_seed(5)
        settings = PreprocessSettings(size=32, fov_mm=32.0)
        save_checkpoint(model_payload(build_model("unet-w4"), "unet-w4", settings), teacher)
    job = tiny_job(run_dir, epochs=3, augment=True, teachers=[load_trained_model(teacher)])
    job.loss = replace(job.loss, feature=0.0)
    return job


def _worker(rank: int, world: int, port: int, run_dir: str, case: str, mode: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    import prokd.io_atomic
    import prokd.training.loop as loop

    if rank != 0:  # any write from this rank would go through atomic_path: forbid it

        class NoWrites:
            def mkstemp(self, *args, **kwargs):
                raise AssertionError(f"rank {rank} tried to write a file")

        prokd.io_atomic.tempfile = NoWrites()
    steps: list[str] = []
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        steps.append(_digest(job_network[0]))
        return out

    torch.optim.AdamW.step = recording_step
    job_network: list[torch.nn.Module] = []
    original_set_up = loop._set_up

    def set_up(*args, **kwargs):
        setup = original_set_up(*args, **kwargs)
        job_network.append(setup.network)
        return setup

    loop._set_up = set_up
    if mode == "crash":  # killed right after epoch 2 was checkpointed
        original_close = loop._close_epoch

        def close_then_die(job, setup, state, epoch, row, context):
            original_close(job, setup, state, epoch, row, context)
            if epoch == 1:
                context.barrier()
                os._exit(0)

        loop._close_epoch = close_then_die
    context = context_from_env("cpu")
    assert context.world_size == world and context.rank == rank
    job = _job_for(Path(run_dir), case)
    summary = loop.run_training(job, resume=mode == "resume", progress=False, context=context)
    Path(run_dir, f"steps-rank{rank}-{mode}.json").write_text(json.dumps(steps))
    if rank == 0:
        assert summary["world_size"] == world
    dist.destroy_process_group()


def _spawn(run_dir: Path, case: str = "supervised", mode: str = "run") -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(run_dir), case, mode), nprocs=2, join=True)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / LAST, weights_only=False)["model"]


@pytest.mark.parametrize("case", ["supervised", "kl-distillation"])
def test_two_ranks_match_one_process_and_stay_identical(case, tmp_path):
    """2 ranks x batch b/2 (DDP, gloo) end where 1 process x batch b ends; the ranks hold
    identical weights after every optimiser step; only rank 0 writes files."""
    one = tmp_path / "one" / "run"
    single = _job_for(one, case)
    torch.set_num_threads(1)
    from prokd.training.loop import run_training

    run_training(single, progress=False, context=Context())
    two = tmp_path / "two" / "run"
    two.mkdir(parents=True)
    _spawn(two, case)
    rank0 = json.loads((two / "steps-rank0-run.json").read_text())
    rank1 = json.loads((two / "steps-rank1-run.json").read_text())
    assert len(rank0) == 6 and rank0 == rank1  # 3 epochs x 2 steps, bit-identical ranks
    history = [torch.load(d / LAST, weights_only=False)["state"]["history"] for d in (one, two)]
    for a, b in zip(*history, strict=True):
        for key in ("loss", "dice", "lovasz", "kl"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
        # thresholded at 0.5: a pixel near the threshold may flip
        assert b["val_dice"] == pytest.approx(a["val_dice"], abs=2e-3)
    # Same function: probabilities on the validation volume agree to float tolerance.
    image = torch.from_numpy(single.val_volumes[0].image[:, None])
    outputs = []
    for run in (one, two):
        network = build_model("unet-w4")
        network.load_state_dict(_weights(run))
        outputs.append(torch.softmax(network.eval()(image), 1).detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=2e-4)
    # Weights agree to float tolerance; biases only to what AdamW's step size allows: a conv
    # bias ahead of instance norm has no true gradient, so float noise steers its (lr-sized)
    # steps in either process.
    steps, lr = 6, single.train.lr
    for key, value in _weights(one).items():
        atol = steps * lr if key.endswith(".bias") else 1e-4
        torch.testing.assert_close(_weights(two)[key], value, rtol=0, atol=atol, msg=key)
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    written = sorted(p.name for p in two.iterdir() if not p.name.startswith("steps-"))
    assert written == ["best.pt", "last.pt", "log.csv", "train_summary.json"]


def test_ddp_run_killed_and_resumed_ends_where_an_uninterrupted_one_ends(tmp_path):
    whole = tmp_path / "whole" / "run"
    whole.mkdir(parents=True)
    _spawn(whole)
    cut = tmp_path / "cut" / "run"
    cut.mkdir(parents=True)
    _spawn(cut, mode="crash")
    assert torch.load(cut / LAST, weights_only=False)["state"]["epoch"] == 1
    _spawn(cut, mode="resume")
    for key, value in _weights(whole).items():
        torch.testing.assert_close(_weights(cut)[key], value, rtol=0, atol=0, msg=key)


def test_device_choice():
    from prokd.devices import resolve_device
    from prokd.errors import ConfigError

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ConfigError, match="device: must be one of auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU machine")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    from prokd.cli import main

    assert main(["bench", "unet-w4", "--device", "cuda", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prokd bench: error: device: cuda requested but torch sees no CUDA device"]


def test_jobs_are_refused_under_torchrun(tmp_path):
    from prokd.errors import ConfigError
    from prokd.training.config import Config
    from prokd.training.experiment import run_experiment

    two_ranks = Context(rank=0, world_size=2)
    with pytest.raises(ConfigError, match="--jobs runs steps as separate processes"):
        run_experiment(Config(), tmp_path / "o", str(tmp_path), False, two_ranks, jobs=2)
    assert not (tmp_path / "o").exists()  # refused before anything was written
