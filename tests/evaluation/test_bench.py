import json

from prokd.cli import main
from prokd.evaluation.bench import bench_table, run_bench, write_bench


def test_bench_measures_models_side_by_side(tmp_path):
    result = run_bench(["unet-w8", "unet-w4"], [32], threads=1, runs=2)
    assert result["threads"] == 1 and result["peak_gflops_per_s"] > 0 and result["cpu"]
    assert {"torch", "onnxruntime"} <= set(result["versions"])
    rows = {r["model"]: r for r in result["rows"]}
    assert rows["unet-w8"]["torch_slice_ratio"] == 1.0  # the first model is the reference
    w4 = rows["unet-w4"]
    assert w4["flops"] < rows["unet-w8"]["flops"] and w4["params"] == 52_876
    for key in ("torch_slice", "onnx_slice", "torch_volume", "onnx_volume"):
        assert 0 < w4[key]["median_ms"] <= w4[key]["p90_ms"]
    assert (
        w4["torch_slice_ratio"]
        == w4["torch_slice"]["median_ms"] / rows["unet-w8"]["torch_slice"]["median_ms"]
    )
    json_path, md_path = write_bench(result, tmp_path / "bench")
    assert json.loads(json_path.read_text())["rows"][0]["model"] == "unet-w8"
    assert md_path.read_text() == bench_table(result) + "\n"
    assert "| unet-w4 | 32 | 52,876 |" in md_path.read_text()


def test_bench_cli_rejects_unknown_model(capsys):
    assert main(["bench", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err
