"""``prokd bench``: parameters, FLOPs and CPU latency of networks, side by side in one process.

Latency is measured after warm-up, per slice (batch 1) and per whole volume (one batch of
``VOLUME_SLICES`` slices), in torch eager mode and in onnxruntime, with the same thread count.
Every model is also compared with the first one given (onnxruntime per-slice latency, which
every model has), and its achieved onnxruntime FLOP/s with the machine's measured peak (a
large float32 matmul). MODEL is a registered network or any model file ``prokd predict``
takes; an ``.onnx`` file has no torch timings.
"""

from __future__ import annotations

import copy
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prokd.data.preprocess import PreprocessSettings
from prokd.errors import ProkdError
from prokd.inference.bundled import BUNDLED, resolve_model_path
from prokd.inference.export import export_model
from prokd.inference.model_files import load_model_file, onnx_session
from prokd.inference.trained import TrainedModel
from prokd.io_atomic import write_json_and_markdown
from prokd.models import MODELS, build_model
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


@dataclass
class BenchSubject:
    """What one MODEL argument names: a registered network or a model file.

    ``network`` is timed in torch (absent for an ``.onnx`` file); ``onnx_file`` is timed in
    onnxruntime (exported on the fly from ``network`` when not given). ``size`` is fixed for
    model files (their preprocessing size); FLOPs (and, for ``.onnx`` files, parameters) are
    those of the registered ``architecture`` the file names.
    """

    name: str
    architecture: str
    network: torch.nn.Module | None
    onnx_file: Path | None = None
    size: int | None = None
    channels: int = 1  # input channels (2.5D models take neighbouring slices)


def bench_subject(spec: str, device: torch.device | None = None) -> BenchSubject:
    """A registry name (untrained weights, seed 0), a bundled model, or a checkpoint, run
    folder, ``.onnx`` or ``.ts`` file as ``prokd evaluate`` and ``predict`` take them.

    Raises:
        ProkdError: neither a registered network nor a readable model file.
    """
    if spec in MODELS:
        torch.manual_seed(0)
        return BenchSubject(spec, spec, build_model(spec).to(device).eval())
    if not resolve_model_path(spec).exists():
        raise ProkdError(
            f"unknown model {spec!r}: neither a registered network (known: "
            f"{', '.join(sorted(MODELS))}), a bundled model ({', '.join(BUNDLED)}) nor a "
            "model file"
        )
    loaded = load_model_file(spec, device)
    onnx_file = loaded.path if loaded.kind == "onnx" else None
    network = None if loaded.network is None else loaded.network.eval()
    settings = loaded.settings
    return BenchSubject(spec, loaded.name, network, onnx_file, settings.size, settings.channels)


def _export_onnx(subject: BenchSubject, size: int, folder: Path) -> Path:
    """The graph ``prokd export`` writes for the subject's network (opset, dynamic batch,
    metadata), exported from a CPU copy so the network itself stays where it runs."""
    network = copy.deepcopy(subject.network).cpu().eval()
    settings = PreprocessSettings(size=size, context_slices=(subject.channels - 1) // 2)
    model = TrainedModel(subject.architecture, network, settings, folder / "bench.pt")
    return export_model(model, "onnx", folder / "model.onnx")


def bench_model(subject: BenchSubject, size: int, threads: int, runs: int) -> dict[str, Any]:
    """One row: size, FLOPs and latencies of a network or model file at ``size`` x ``size``."""
    network = subject.network
    channels = subject.channels
    architecture = build_model(subject.architecture, channels).eval()
    flops = count_flops(architecture, size, size, channels)
    slice_input = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    volume_input = torch.randn(
        VOLUME_SLICES, channels, size, size, generator=torch.Generator().manual_seed(1)
    )
    torch_slice = torch_volume = None
    if network is not None:
        device = next(network.parameters()).device
        on_device = slice_input.to(device), volume_input.to(device)

        def forward(batch: torch.Tensor) -> None:
            network(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        with torch.inference_mode():
            torch_slice = _time(lambda: forward(on_device[0]), runs)
            torch_volume = _time(lambda: forward(on_device[1]), max(3, runs // 4))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = subject.onnx_file or _export_onnx(subject, size, Path(tmp))
        session = onnx_session(onnx_file, threads)
        name = session.get_inputs()[0].name
        x1, xv = slice_input.numpy(), volume_input.numpy()
        onnx_slice = _time(lambda: session.run(None, {name: x1}), runs)
        onnx_volume = _time(lambda: session.run(None, {name: xv}), max(3, runs // 4))
    return {
        "model": subject.name,
        "architecture": subject.architecture,
        "size": size,
        "params": count_parameters(network if network is not None else architecture),
        "flops": flops,
        "torch_slice": None if torch_slice is None else torch_slice.__dict__,
        "torch_volume": None if torch_volume is None else torch_volume.__dict__,
        "onnx_slice": onnx_slice.__dict__,
        "onnx_volume": onnx_volume.__dict__,
    }


def _onnx_ms(row: dict[str, Any]) -> float:
    """Per-slice onnxruntime latency: measured for every model, so ratios compare like."""
    return row["onnx_slice"]["median_ms"]


def run_bench(
    models: list[str],
    sizes: list[int],
    threads: int,
    runs: int,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Benchmark every model at every size; ratios are against the first model.

    Model files are measured at their own preprocessing size only. Torch timings run on
    ``device`` (default CPU); onnxruntime on the CPU.
    """
    torch.set_num_threads(threads)
    subjects = [bench_subject(m, device) for m in models]
    peak = peak_flops()
    rows = [
        bench_model(subject, s, threads, runs)
        for s in sizes
        for subject in subjects
        if subject.size in (None, s)
    ]
    rows += [
        bench_model(subject, subject.size, threads, runs)
        for subject in subjects
        if subject.size is not None and subject.size not in sizes
    ]
    for row in rows:
        first = next(
            (r for r in rows if r["size"] == row["size"] and r["model"] == models[0]), None
        )
        row["ratio_to_first"] = None if first is None else _onnx_ms(row) / _onnx_ms(first)
        row["onnx_speedup"] = (
            None
            if row["torch_slice"] is None
            else row["torch_slice"]["median_ms"] / row["onnx_slice"]["median_ms"]
        )
        row["gflops_per_s"] = row["flops"] / _onnx_ms(row) / 1e6
        row["share_of_peak"] = row["gflops_per_s"] * 1e9 / peak
    versions = {p: metadata.version(p) for p in ("torch", "onnxruntime", "monai")}
    return {
        "cpu": cpu_model(),
        "torch_device": str(device or "cpu"),
        "gpu": torch.cuda.get_device_name(device) if device and device.type == "cuda" else None,
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
        f"CPU: {result['cpu']}; {result['threads']} threads; torch on "
        f"{result.get('gpu') or result.get('torch_device', 'cpu')}; torch "
        f"{result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}; "
        f"measured peak {result['peak_gflops_per_s']:.1f} GFLOP/s (float32 matmul). "
        f"{result['flop_convention']}. Latency: median (p90) ms over {result['runs']} runs; "
        f"volume = one batch of {result['volume_slices']} slices.",
        "",
        "| model | size | params | GFLOPs/slice | torch ms/slice | onnx ms/slice | "
        "torch ms/volume | onnx ms/volume | x first model (onnx) | onnx speed-up | "
        "onnx GFLOP/s | % of peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def timing(row: dict[str, Any], key: str) -> str:
        cell = row[key]
        return "n/a" if cell is None else f"{cell['median_ms']:.1f} ({cell['p90_ms']:.1f})"

    def ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params']:,} | {r['flops'] / 1e9:.3f} | "
            f"{timing(r, 'torch_slice')} | {timing(r, 'onnx_slice')} | "
            f"{timing(r, 'torch_volume')} | {timing(r, 'onnx_volume')} | "
            f"{ratio(r['ratio_to_first'])} | {ratio(r['onnx_speedup'])} | "
            f"{r['gflops_per_s']:.1f} | {100 * r['share_of_peak']:.1f} |"
        )
    return "\n".join(lines)


def write_bench(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``<out>.json`` and ``<out>.md``, written atomically."""
    return write_json_and_markdown(out, result, bench_table(result))


def study_latency(summary: dict[str, Any], runs: int = 10) -> dict[str, Any]:
    """onnxruntime ms per volume of every regime's student network, measured side by side in
    this process with the machine's threads (weights do not change the cost)."""
    students = sorted({r["config"]["experiment"]["student"] for r in summary["regimes"].values()})
    sizes = {r["config"]["preprocess"]["size"] for r in summary["regimes"].values()}
    threads = torch.get_num_threads()
    rows = {
        f"{name}@{size}": bench_model(bench_subject(name), size, threads, runs)
        for name in students
        for size in sorted(sizes)
    }
    return {
        "threads": threads,
        "cpu": cpu_model(),
        "volume_slices": VOLUME_SLICES,
        "ms_per_volume": {k: r["onnx_volume"]["median_ms"] for k, r in rows.items()},
        "params": {k: r["params"] for k, r in rows.items()},
    }
