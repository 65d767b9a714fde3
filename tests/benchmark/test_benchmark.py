"""The benchmark measures what it claims: the same weights everywhere, every implementation, the table and JSON."""
import json

import pytest
import torch

from cvx2_backbone.cli.main import main as cvx2_main
from cvx2_backbone.benchmark.run import (Case, build_models, check_parity, default_cases, input_label, make_step,
                                         stage_outputs, summarize)


def test_benchmark_loads_the_same_weights_into_every_implementation():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    impls = ["cvx2", "timm", "hf", "reference", "onnxruntime", "openvino"]
    models = build_models("atto", impls, seed=0)
    assert list(models) == impls
    errors = check_parity(models, torch.randn(2, 3, 64, 96))
    assert all(error < 1e-5 for error in errors.values()), errors
    # GRN parameters were randomised, so the agreement above is not that of identity GRNs.
    assert models["cvx2"].stages[0][0].grn.gamma.abs().min() > 0
    with torch.no_grad():
        models["timm"].stages_0.blocks[0].mlp.grn.weight.mul_(2)
    with pytest.raises(RuntimeError, match="timm disagrees"):
        check_parity(models, torch.randn(1, 3, 64, 64))


def test_benchmark_step_outputs_stage_maps_for_every_implementation():
    models = build_models("atto", ["cvx2", "timm", "hf"], seed=0)
    x = torch.randn(1, 3, 64, 64)
    for impl, model in models.items():
        outputs = stage_outputs(impl, model.eval(), x)
        assert [o.shape[1] for o in outputs] == [40, 80, 160, 320], impl


def test_runtimes_serve_inference_cases_only():
    pytest.importorskip("onnxruntime")
    models = build_models("atto", ["onnxruntime", "openvino"], seed=0)
    x = torch.randn(1, 3, 64, 64)
    for name in ("train-fp32", "infer-fp32-compile"):
        for impl, model in models.items():
            with pytest.raises(NotImplementedError, match="eager inference only"):
                make_step(impl, model, Case.parse(name), x)
    with pytest.raises(NotImplementedError, match="onnxruntime has no bf16 mode"):
        make_step("onnxruntime", models["onnxruntime"], Case.parse("infer-bf16"), x)
    make_step("openvino", models["openvino"], Case.parse("infer-bf16"), x)()
    assert models["openvino"].precision_used("bf16") in ("bf16", "fp32")  # fp32 where the CPU has no bf16


def test_case_grammar():
    assert [Case.parse(f"train-bf16{cp}@det").cp_granularity for cp in ("-cp", "-cp-block", "-cp-stage")] == [
        None, "block", "stage"]
    assert Case.parse("infer-fp16-compile@64x224").compiled and not Case.parse("train-fp32-cp-stage").compiled
    case = Case.parse("infer-bf16@1x800x1216")
    assert (case.task, case.precision, case.shape, case.detection) == ("infer", "bf16", (1, 800, 1216), False)
    assert Case.parse("train-fp16-cp@det").detection and Case.parse("infer-fp32@8x224").shape == (8, 224, 224)
    assert input_label({"batch": 1, "resolution": 800, "width": 1216}) == "1x800x1216"
    assert input_label({"batch": 8, "resolution": 224, "width": 224}) == "8x224"


@pytest.mark.parametrize("name,error", [("infer-fp8", "unknown case"), ("infer-fp32-cp", "only matters for train"),
                                        ("infer-fp32-cp-stage", "only matters for train"),
                                        ("train-fp32-cp-layer", "unknown case"),
                                        ("train", "unknown case"), ("infer-fp32@0x224", "at least 1 image"),
                                        ("infer-fp32@1x16", "at least 32x32")])
def test_benchmark_rejects_bad_cases(name, error):
    with pytest.raises(ValueError, match=error):
        Case.parse(name)


def test_default_cases_leave_out_bf16_where_it_is_emulated(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    emulated = default_cases(torch.device("cpu"))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    native = default_cases(torch.device("cpu"))
    assert "infer-bf16@1x800x1216" in native and "extract-bf16" in native and len(native) == 12
    assert emulated == [name for name in native if "bf16" not in name] and "infer-fp32@1x800x1216" in emulated


def test_summary_gives_each_target_per_input():
    def row(case, impl, img_per_s, **extra):
        return dict(size="tiny", case=case, impl=impl, batch=1, resolution=224, width=224, img_per_s=img_per_s,
                    peak_mib=None, **extra)
    results = [row("infer-fp32@1x224", "cvx2", 12.0), row("infer-fp32@1x224", "onnxruntime", 10.0),
               row("infer-fp32@1x224", "openvino", 16.0), row("infer-fp32@1x224", "extract", 15.2),
               row("infer-bf16@1x224", "cvx2", 30.0), row("infer-bf16@1x224", "openvino", 20.0,
                                                          precision_used="bf16"),
               row("infer-bf16@1x224", "extract", 30.0),
               row("extract-fp32", "cvx2-extract", 9.0), row("extract-fp32", "timm-loop", 4.0),
               row("extract-fp32", "openvino-loop", 8.5)]
    checks = summarize(results)["tiny"]
    assert checks == {
        "eager fp32 inference vs ONNX Runtime (1x224)": {"value": 1.2, "target": 1.0, "met": True},
        "extract fp32 vs best of ONNX Runtime and OpenVINO (1x224)": {"value": 0.95, "target": 1.0, "met": False},
        "bf16 inference vs OpenVINO bf16 (1x224)": {"value": 1.5, "target": 1.2, "met": True},
        "bf16 vs fp32 inference (1x224)": {"value": 2.5, "target": 1.6, "met": True},
        "extract bf16 vs best of ONNX Runtime and OpenVINO (1x224)": {"value": 1.5, "target": 1.0, "met": True},
        "extract-fp32 end to end vs timm-loop": {"value": 2.25, "target": 2.0, "met": True},
        "extract-fp32 end to end vs openvino-loop": {"value": 9.0 / 8.5, "target": 1.1, "met": False}}


@pytest.mark.parametrize("argv,error", [(["--sizes", "tinyy"], "unknown size"), (["--repeats", "0"], "at least 1"),
                                        (["--impls", "cvx2,onnx"], "unknown implementation"),
                                        (["--resolution", "16"], "at least 32")])
def test_bench_command_rejects_bad_arguments(argv, error, capsys):
    assert cvx2_main(["bench", *argv]) == 2  # a usage error: one message, no traceback
    assert error in capsys.readouterr().err


def test_bench_command_prints_table_and_writes_json(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    path = tmp_path / "bench.json"
    code = cvx2_main(["bench", "--sizes", "atto", "--cases", "infer-fp32,infer-fp32@1x64x96,train-fp32@det,"
                     "train-fp32-cp@det", "--batch", "2", "--resolution", "64", "--det-resolution", "96",
                     "--repeats", "2", "--det-repeats", "1", "--warmup", "1", "--threads", "1", "--markdown",
                     "--json", str(path)])
    assert code == 0
    out, err = capsys.readouterr()
    assert "img/s" in out and "x timm" in out and "x onnxruntime" in out and "x openvino" in out
    assert "outputs agree" in out
    assert "| atto | train-fp32-cp@det | 1x96 | cvx2 |" in out and "| atto | with_cp training memory saving |" in out
    assert "| atto | infer-fp32@1x64x96 | 1x64x96 | onnxruntime |" in out
    assert "hf has no gradient checkpointing" in err and "onnxruntime runs eager inference only" in err
    report = json.loads(path.read_text())
    rows = {(r["case"], r["impl"]): r for r in report["results"]}
    infer = {(case, impl) for case in ("infer-fp32", "infer-fp32@1x64x96")
             for impl in ("cvx2", "extract", "timm", "hf", "onnxruntime", "openvino")}
    assert set(rows) == infer | {("train-fp32@det", "cvx2"), ("train-fp32@det", "timm"), ("train-fp32@det", "hf"),
                                 ("train-fp32-cp@det", "cvx2"), ("train-fp32-cp@det", "timm")}
    assert all(r["img_per_s"] > 0 and len(r["seconds"]) >= 1 for r in rows.values())
    assert all((r["peak_mib"] is None) == (r["impl"] in ("onnxruntime", "openvino", "extract")) for r in rows.values())
    assert all(r["peak_mib"] > 0 for r in rows.values() if r["peak_mib"] is not None)
    assert rows[("infer-fp32", "timm")]["ratio_to_timm"] == 1.0
    assert rows[("infer-fp32", "onnxruntime")]["ratios"]["onnxruntime"] == 1.0
    cvx2 = rows[("infer-fp32@1x64x96", "cvx2")]
    assert cvx2["ratios"]["onnxruntime"] == cvx2["img_per_s"] / rows[("infer-fp32@1x64x96", "onnxruntime")]["img_per_s"]
    assert (cvx2["batch"], cvx2["resolution"], cvx2["width"]) == (1, 64, 96)
    assert rows[("train-fp32@det", "cvx2")]["resolution"] == 96
    assert rows[("infer-fp32", "openvino")]["precision_used"] == "fp32"
    assert rows[("infer-fp32", "extract")]["precision_used"] == "torch fp32"  # the tests' default runtime (conftest)
    checks = report["summary"]["atto"]
    assert set(checks) == {"eager fp32 inference vs timm", "eager fp32 inference vs ONNX Runtime (2x64)",
                           "eager fp32 inference vs ONNX Runtime (1x64x96)", "with_cp training memory saving",
                           "extract fp32 vs best of ONNX Runtime and OpenVINO (2x64)",
                           "extract fp32 vs best of ONNX Runtime and OpenVINO (1x64x96)",
                           "checkpointed fp32 training vs timm checkpointed (1x96)",
                           "checkpointed fp32 training memory, timm's / ours (1x96)"}
    assert report["meta"]["threads"] == 1 and report["parity"]["atto"]["timm"] < 1e-5
    assert report["parity"]["atto"]["onnxruntime"] < 1e-5 and report["meta"]["onnxruntime"]


def test_the_extract_row_runs_the_default_engine_and_timm_is_the_fp32_baseline_only(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("CVX2_RUNTIME", "auto")
    models = build_models("atto", ["cvx2", "extract"], seed=0)
    x = torch.randn(1, 3, 64, 64)
    check_parity(models, x)  # within 1e-4 of the PyTorch path, whichever engine auto chose
    engine = models["extract"].precision_used("fp32").split()[0]
    assert engine in ("torch", "onnxruntime", "openvino")

    from cvx2_backbone.benchmark.extract import run_extract_case
    bf16 = run_extract_case("atto", "bf16", images=2, repeats=1, threads=1, seed=0, jobs=("timm-loop",),
                            log=lambda text: None)
    assert bf16 == {}  # timm's loop is the fp32 baseline only


def test_bench_command_runs_the_end_to_end_case_alone(tmp_path, capsys):
    pytest.importorskip("openvino")
    path = tmp_path / "bench.json"
    assert cvx2_main(["bench", "--sizes", "atto", "--cases", "extract-fp32", "--extract-images", "2", "--repeats", "1",
                     "--threads", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["parity"] == {}  # no inference case: nothing else was built
    rows = {r["impl"]: r for r in report["results"]}
    assert set(rows) == {"cvx2-extract", "timm-loop", "openvino-loop"} and rows["timm-loop"]["ratios"]["timm"] == 1.0
    assert all(r["batch"] == 2 and r["img_per_s"] > 0 for r in rows.values())
    assert set(report["summary"]["atto"]) == {"extract-fp32 end to end vs timm-loop",
                                              "extract-fp32 end to end vs openvino-loop"}
    assert "extract-fp32  2 photos  cvx2-extract" in capsys.readouterr().out


def test_summary_gives_issue_30_targets_for_compiled_and_checkpointed_cases():
    def row(case, impl, img_per_s, batch=64, peak_mib=None):
        return dict(size="tiny", case=case, impl=impl, batch=batch, resolution=224, width=224, img_per_s=img_per_s,
                    peak_mib=peak_mib)
    results = [row("infer-bf16@64x224", "cvx2", 3800.0), row("infer-bf16@64x224", "timm", 3700.0),
               row("infer-bf16-compile@64x224", "cvx2", 2800.0), row("infer-bf16-compile@64x224", "timm", 7000.0),
               row("train-bf16-cp-stage@1x1024", "cvx2", 18.0, 1, 700.0),
               row("train-bf16-cp-stage@1x1024", "timm", 17.0, 1, 1400.0)]
    checks = summarize(results)["tiny"]
    assert checks == {
        "eager bf16 infer vs timm (64x224)": {"value": 3800 / 3700, "target": 1.0, "met": True},
        "compiled bf16 inference vs timm compiled (64x224)": {"value": 0.4, "target": 1.0, "met": False},
        "compiled vs eager bf16 inference (64x224)": {"value": 2800 / 3800, "target": 1.5, "met": False},
        "checkpointed-stage bf16 training vs timm checkpointed (1x224)": {"value": 18 / 17, "target": 1.0,
                                                                          "met": True},
        "checkpointed-stage bf16 training memory, timm's / ours (1x224)": {"value": 2.0, "target": 1.0, "met": True}}
