import json

from prokd.cli import main
from prokd.evaluation.bench import bench_table, run_bench, write_bench


def test_bench_measures_models_side_by_side(tmp_path):
    result = run_bench(["unet-w8", "unet-w4"], [32], threads=1, runs=2)
    assert result["threads"] == 1 and result["peak_gflops_per_s"] > 0 and result["cpu"]
    assert {"torch", "onnxruntime"} <= set(result["versions"])
    rows = {r["model"]: r for r in result["rows"]}
    assert rows["unet-w8"]["ratio_to_first"] == 1.0  # the first model is the reference
    w4 = rows["unet-w4"]
    assert w4["flops"] < rows["unet-w8"]["flops"] and w4["params"] == 52_876
    for key in ("torch_slice", "onnx_slice", "torch_volume", "onnx_volume"):
        assert 0 < w4[key]["median_ms"] <= w4[key]["p90_ms"]
    assert (
        w4["ratio_to_first"]
        == w4["onnx_slice"]["median_ms"] / rows["unet-w8"]["onnx_slice"]["median_ms"]
    )
    json_path, md_path = write_bench(result, tmp_path / "bench")
    assert json.loads(json_path.read_text())["rows"][0]["model"] == "unet-w8"
    assert md_path.read_text() == bench_table(result) + "\n"
    assert "| unet-w4 | 32 | 52,876 |" in md_path.read_text()


def test_bench_cli_rejects_unknown_model(capsys):
    assert main(["bench", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err


def test_bench_takes_the_model_files_users_ship(tmp_path, capsys):
    """A checkpoint, its run folder and its ONNX export are benched like registry names."""
    from prokd.data.preprocess import PreprocessSettings
    from prokd.inference.export import export_model
    from prokd.inference.trained import load_trained_model, model_payload
    from prokd.models import build_model
    from prokd.training.checkpoints import save_checkpoint

    run = tmp_path / "run"
    settings = PreprocessSettings(size=32, fov_mm=32.0)
    save_checkpoint(model_payload(build_model("unet-w4"), "unet-w4", settings), run / "best.pt")
    onnx_file = export_model(load_trained_model(run), "onnx", tmp_path / "w4.onnx")
    result = run_bench(["unet-w4", str(run), str(onnx_file)], [32, 64], threads=1, runs=2)
    rows = [(r["model"], r["size"]) for r in result["rows"]]
    # files run at their own preprocessing size only; the registry name at every size
    assert rows == [("unet-w4", 32), (str(run), 32), (str(onnx_file), 32), ("unet-w4", 64)]
    by_model = {r["model"]: r for r in result["rows"] if r["size"] == 32}
    assert by_model[str(onnx_file)]["torch_slice"] is None  # onnxruntime only
    assert by_model[str(onnx_file)]["params"] == by_model[str(run)]["params"] == 52_876
    assert by_model[str(run)]["flops"] == by_model["unet-w4"]["flops"]
    assert "n/a" in bench_table(result)
    out = tmp_path / "b"
    assert main(["bench", str(onnx_file), "--size", "32", "--runs", "1", "--out", str(out)]) == 0
    assert out.with_suffix(".json").exists()
