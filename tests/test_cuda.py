"""A CUDA smoke test of the device paths: train, distil with the soft-target cache,
evaluate, bench, and a DDP step under NCCL. Skips without a GPU (CI has none)."""

import os
import socket

import pytest
import torch

from prokd.cli import main
from prokd.training.distributed import Context

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_experiment_evaluate_and_bench_on_cuda(tmp_path):
    from prokd.training.experiment import run_experiment
    from tests.conftest import tiny_demo, tiny_phantom

    phantom = tiny_phantom(tmp_path / "data", sites=2, cases_per_site=2, seed=1)
    config = tiny_demo(tmp_path, teacher="unet-w4").replace(distill={"soft_target_cache": True})
    cuda = Context(0, 1, torch.device("cuda"))
    results = run_experiment(config, tmp_path / "run", str(phantom), progress=False, context=cuda)
    assert {r["model"] for r in results["rows"]} >= {"teacher", "student-kd-p1"}
    checkpoint = tmp_path / "run" / "models" / "student-kd-p1"
    argv = ["evaluate", str(checkpoint), "--data", str(phantom), "--device", "cuda"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 0
    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "unet-w4",
                "--size",
                "32",
                "64",
                "--runs",
                "3",
                "--device",
                "cuda",
                "--out",
                str(out),
            ]
        )
        == 0
    )


def test_a_ddp_step_under_nccl(tmp_path):
    """One rank under NCCL: the reductions prokd makes take CUDA tensors."""
    import torch.distributed as dist

    from prokd.training.distributed import data_parallel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        context = Context(0, 1, torch.device("cuda"))
        network = data_parallel(torch.nn.Linear(4, 2).cuda(), context)
        network(torch.randn(3, 4, device="cuda")).sum().backward()
        summed = torch.tensor([1.0, 2.0])  # a CPU tensor, as the loop logs its loss parts
        reduced = summed.to(context.device).clone()
        dist.all_reduce(reduced)
        assert reduced.device.type == "cuda" and reduced.tolist() == [1.0, 2.0]
    finally:
        dist.destroy_process_group()
