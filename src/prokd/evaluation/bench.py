"""``prokd bench``: parameters, FLOPs and CPU latency of networks, side by side in one process.

Latency is measured after warm-up, per slice (batch 1) and per whole volume (one batch of
``VOLUME_SLICES`` slices), in torch eager mode and in onnxruntime, with the same thread count.
Every model is also compared with the first one given, and its achieved FLOP/s with the
machine's measured peak (a large float32 matmul).
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from prokd.io_atomic import atomic_path
from prokd.models import build_model
from prokd.models.profile import FLOP_CONVENTION, count_flops, count_parameters

VOLUME_SLICES = 24


@dataclass(frozen=True)
class Timing:
    """Median and 90th percentile of repeated measurements, in milliseconds."""

    median_ms: float
    p90_ms: float


def _time(run: Any, runs: int, warmup: int = 2) -> Timing:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return Timing(float(statistics.median(times)), float(np.percentile(times, 90)))


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops(size: int = 2048, runs: int = 5) -> float:
    """Measured float32 matmul FLOP/s (2 * n^3 per product): the practical CPU ceiling."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    timing = _time(lambda: a @ b, runs)
    return 2.0 * size**3 / (timing.median_ms / 1000.0)


def _onnx_session(
    network: torch.nn.Module, size: int, folder: Path, threads: int
) -> ort.InferenceSession:
    path = folder / "model.onnx"
    torch.onnx.export(
        network,
        (torch.zeros(1, 1, size, size),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_model(name: str, size: int, threads: int, runs: int) -> dict[str, Any]:
    """One row: size, FLOPs and latencies of a registered network at ``size`` x ``size``."""
    torch.manual_seed(0)
    network = build_model(name).eval()
    flops = count_flops(network, size, size)
    slice_input = torch.randn(1, 1, size, size)
    volume_input = torch.randn(VOLUME_SLICES, 1, size, size)
    with torch.inference_mode():
        torch_slice = _time(lambda: network(slice_input), runs)
        torch_volume = _time(lambda: network(volume_input), max(3, runs // 4))
    with tempfile.TemporaryDirectory() as tmp:
        session = _onnx_session(network, size, Path(tmp), threads)
        x1, xv = slice_input.numpy(), volume_input.numpy()
        onnx_slice = _time(lambda: session.run(None, {"image": x1}), runs)
        onnx_volume = _time(lambda: session.run(None, {"image": xv}), max(3, runs // 4))
    return {
        "model": name,
        "size": size,
        "params": count_parameters(network),
        "flops": flops,
        "torch_slice": torch_slice.__dict__,
        "torch_volume": torch_volume.__dict__,
        "onnx_slice": onnx_slice.__dict__,
        "onnx_volume": onnx_volume.__dict__,
        "torch_gflops_per_s": flops / torch_slice.median_ms / 1e6,
    }


def run_bench(models: list[str], sizes: list[int], threads: int, runs: int) -> dict[str, Any]:
    """Benchmark every model at every size; ratios are against the first model."""
    torch.set_num_threads(threads)
    peak = peak_flops()
    rows = [bench_model(m, s, threads, runs) for s in sizes for m in models]
    for row in rows:
        first = next(r for r in rows if r["size"] == row["size"] and r["model"] == models[0])
        row["torch_slice_ratio"] = (
            row["torch_slice"]["median_ms"] / first["torch_slice"]["median_ms"]
        )
        row["onnx_speedup"] = row["torch_slice"]["median_ms"] / row["onnx_slice"]["median_ms"]
        row["share_of_peak"] = row["torch_gflops_per_s"] * 1e9 / peak
    versions = {p: metadata.version(p) for p in ("torch", "onnxruntime", "monai")}
    return {
        "cpu": cpu_model(),
        "threads": threads,
        "runs": runs,
        "volume_slices": VOLUME_SLICES,
        "peak_gflops_per_s": peak / 1e9,
        "flop_convention": FLOP_CONVENTION,
        "versions": versions,
        "rows": rows,
    }


def bench_table(result: dict[str, Any]) -> str:
    """Markdown table of a :func:`run_bench` result."""
    lines = [
        f"CPU: {result['cpu']}; {result['threads']} threads; torch "
        f"{result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}; "
        f"measured peak {result['peak_gflops_per_s']:.1f} GFLOP/s (float32 matmul). "
        f"{result['flop_convention']}. Latency: median (p90) ms over {result['runs']} runs; "
        f"volume = one batch of {result['volume_slices']} slices.",
        "",
        "| model | size | params | GFLOPs/slice | torch ms/slice | onnx ms/slice | "
        "torch ms/volume | onnx ms/volume | x first model | onnx speed-up | GFLOP/s | % of peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def timing(row: dict[str, Any], key: str) -> str:
        return f"{row[key]['median_ms']:.1f} ({row[key]['p90_ms']:.1f})"

    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params']:,} | {r['flops'] / 1e9:.3f} | "
            f"{timing(r, 'torch_slice')} | {timing(r, 'onnx_slice')} | "
            f"{timing(r, 'torch_volume')} | {timing(r, 'onnx_volume')} | "
            f"{r['torch_slice_ratio']:.2f} | {r['onnx_speedup']:.2f} | "
            f"{r['torch_gflops_per_s']:.1f} | {100 * r['share_of_peak']:.1f} |"
        )
    return "\n".join(lines)


def write_bench(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``<out>.json`` and ``<out>.md``, written atomically."""
    out = Path(out)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    with atomic_path(md_path) as tmp:
        tmp.write_text(bench_table(result) + "\n")
    return json_path, md_path
