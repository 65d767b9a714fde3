"""`cvx2 export` and cvx2_backbone.deploy.export_backbone: ONNX (both torch exporters) with dynamic batch and size,
metadata, OpenVINO IR, the fp16-safe GRN graph, and the command's errors.

Exports are traced at 2x3x64x96 and run at other batches and sizes. Default suite: the TorchScript exporter for V1
and V2 at two sizes, the dynamo exporter for V2 (tiny dims); `pytest -m heavy tests/export/test_onnx.py` adds dynamo
for the rest (about 20 s an export on 2 cores).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cvx2_backbone import ConvNeXt, ConvNeXtV2, ops  # noqa: E402
from cvx2_backbone.cli.main import main as cvx2_main  # noqa: E402
from cvx2_backbone.models.convnext import GRN, Block  # noqa: E402
from cvx2_backbone.export.onnx import (EXPORT_SAMPLE, export_backbone, read_metadata,  # noqa: E402
                                       relative_error)
from cvx2_backbone.extraction.extractor import FeatureExtractor  # noqa: E402

TINY = dict(depths=[1, 1, 2, 1], dims=[16, 32, 64, 128])
RUN_SHAPES = [(1, 3, 96, 160), (3, 3, 128, 64)]  # other batches and sizes than EXPORT_SAMPLE


def randomized(model, seed=0):
    """Random GRN gamma/beta, layer scales and norms: every part does work (and no two norms are equal, which the
    graph optimizer would merge)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GRN):
                module.gamma.copy_(torch.randn(module.gamma.shape, generator=generator) * 0.5)
                module.beta.copy_(torch.randn(module.beta.shape, generator=generator) * 0.1)
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, Block) and module.gamma is not None:
                module.gamma.copy_(torch.rand(module.gamma.shape, generator=generator))
    return model.eval()


def plain_outputs(model, x):
    with torch.no_grad(), ops.plain_ops():
        return list(model(x))


def assert_ort_matches(path, model, shapes=RUN_SHAPES, rtol=1e-4):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(model.out_features)
    for shape in shapes:
        x = torch.randn(*shape)
        actual = session.run(None, {"x": x.numpy()})
        for a, e in zip(actual, plain_outputs(model, x), strict=True):
            assert relative_error(a, e) <= rtol, (shape, relative_error(a, e))


CASES = [(cls, arch, exporter) for cls in (ConvNeXtV2, ConvNeXt) for arch in ("tiny", "atto")
         for exporter in ("torchscript", "dynamo")]


def _case_marks(cls, arch, exporter):
    default = exporter == "torchscript" or (cls is ConvNeXtV2 and arch == "tiny")
    return () if default else (pytest.mark.heavy,)


@pytest.mark.parametrize("cls,arch,exporter", [pytest.param(*c, marks=_case_marks(*c)) for c in CASES],
                         ids=[f"{c[0].__name__}-{c[1]}-{c[2]}" for c in CASES])
def test_export_runs_at_other_batches_and_sizes(tmp_path, cls, arch, exporter):
    model = randomized(cls(TINY if arch == "tiny" else arch))
    result = export_backbone(model, tmp_path / "backbone.onnx", exporter=exporter)
    assert_ort_matches(result.onnx, model)
    meta = read_metadata(result.onnx)
    assert meta["outputs"] == ["stage1", "stage2", "stage3", "stage4"] and meta["strides"] == [4, 8, 16, 32]
    assert meta["channels"] == model.out_channels and meta["exporter"] == exporter and meta["fp16_safe"] is True
    graph = onnx.load(str(result.onnx))
    assert meta["opset"] == next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 3 and all(isinstance(d, str) for d in dims[2:])
    # every LayerNorm (stem, downsampling, blocks, outputs) is one LayerNormalization node (fp32 statistics by the
    # ONNX spec's stash_type), not a decomposed mean of squares that fp16 overflows (ConvNeXt #80)
    norms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert sum(n.op_type == "LayerNormalization" for n in graph.graph.node) == norms
    assert not any(n.op_type == "Pow" for n in graph.graph.node)


def test_fpn_of_a_detector_checkpoint_through_the_command_with_verify_and_openvino(tmp_path, capsys):
    mmdet_fpn = pytest.importorskip("mmdet.models.necks").FPN
    torch.manual_seed(1)
    backbone = randomized(ConvNeXtV2(arch=TINY))
    neck = mmdet_fpn(in_channels=TINY["dims"], out_channels=16, num_outs=5)
    for param in neck.parameters():  # mmdet zero-inits biases: make them matter
        torch.nn.init.normal_(param, std=0.1)
    detector = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                **{f"neck.{k}": v for k, v in neck.state_dict().items()}, "rpn_head.rpn_conv.weight": torch.zeros(1)}
    torch.save({"state_dict": detector, "meta": {}}, tmp_path / "detector.pth")
    out = tmp_path / "out" / "det_fpn.onnx"
    code = cvx2_main(["export", "-o", str(out), "--weights", str(tmp_path / "detector.pth"), "--fpn", "16",
                      "--exporter", "torchscript", "--verify", "--openvino"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    verified = r"verified with (?:onnxruntime|openvino) .*max relative error (\S+)"
    errors = [float(e) for e in re.findall(verified, printed)]
    assert len(errors) == 2 and max(errors) <= 1e-4, printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["det_fpn.bin", "det_fpn.onnx", "det_fpn.xml"]
    meta = read_metadata(out)
    assert meta["outputs"] == ["p2", "p3", "p4", "p5", "p6"] and meta["strides"] == [4, 8, 16, 32, 64]
    assert meta["channels"] == [16] * 5 and meta["weights"] == str(tmp_path / "detector.pth")

    # the exported graph is the detector's backbone + trained FPN: compare with mmdet's own FPN
    x = torch.randn(2, 3, 128, 192)
    with torch.no_grad(), ops.plain_ops():
        expected = neck(backbone(x))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for a, e in zip(session.run(None, {"x": x.numpy()}), expected, strict=True):
        assert relative_error(a, e) <= 1e-4
    import openvino as ov
    compiled = ov.Core().compile_model(str(out.with_suffix(".xml")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for a, e in zip(compiled({0: x.numpy()}).values(), expected, strict=True):
        assert relative_error(a, e) <= 1e-4


def test_fp16_safe_statistics_equal_the_official_formula_in_fp32():
    model = randomized(ConvNeXtV2(TINY))
    x = torch.randn(2, 3, 96, 64)
    x[1] = 0  # an all-zero image: its GRN maxima are 0 (scaled by 1 instead)
    reference = plain_outputs(model, x)
    with ops.fp16_safe_statistics():
        safe = plain_outputs(model, x)
    for a, e in zip(safe, reference, strict=True):
        assert torch.isfinite(a).all() and relative_error(a, e) <= 1e-5
    grn, hidden = GRN(8), torch.randn(2, 5, 7, 8) * 1e3
    official = torch.linalg.vector_norm(hidden, dim=(1, 2), keepdim=True)
    official = official / (official.mean(dim=-1, keepdim=True) + grn.eps)
    assert relative_error(ops.scaled_response_norm(hidden, grn.eps), official) <= 1e-6


def test_fp16_graph_stays_finite_only_with_the_safe_statistics(tmp_path):
    """Both graphs converted to fp16 (onnxconverter-common) and run by ONNX's reference runtime, which computes in
    the graph's types (ONNX Runtime's CPU provider runs fp16 ReduceL2 in fp32, so it would hide the overflow)."""
    float16 = pytest.importorskip("onnxconverter_common.float16")
    from onnx.reference import ReferenceEvaluator

    model = randomized(ConvNeXtV2(TINY))
    with torch.no_grad():  # stage 1's hidden activations near 400 (activation_scale of tests/models/test_fast_path.py)
        for block in model.stages[0]:
            block.norm.weight.mul_(1000)
    x = torch.randn(2, 3, 96, 128)
    peaks = []
    hook = model.stages[0][0].grn.register_forward_pre_hook(lambda m, a: peaks.append(a[0].abs().max().item()))
    expected = plain_outputs(model, x)
    hook.remove()
    assert peaks[0] > 256  # its square, hence a plain fp16 sum of squares, overflows fp16 (max 65504)
    results = {}
    for name, safe in (("safe", True), ("naive", False)):
        path = export_backbone(model, tmp_path / f"{name}.onnx", exporter="torchscript", fp16_safe=safe).onnx
        with pytest.warns(UserWarning):  # tiny weights clamped to fp16's range: the converter says so
            half = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=False)
        assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        results[name] = ReferenceEvaluator(half).run(None, {"x": x.numpy().astype(np.float16)})
    for a, e in zip(results["safe"], expected, strict=True):
        assert a.dtype == np.float16 and np.isfinite(a).all()
        assert relative_error(a.astype(np.float32), e) <= 1e-2
    assert not all(np.isfinite(a).all() for a in results["naive"])


BAD = [
    (["--model", "convnextv2_femto", "--weights", "{root}/atto.pth"],
     r"--weights .*atto.pth do not fit --model convnextv2_femto: they are ConvNeXt V2 atto weights; leave --model "
     r"out \(it is read from the weights\) or pass --model convnextv2_atto"),
    (["--exporter", "onnxruntime"], r"unknown exporter 'onnxruntime'; choose dynamo or torchscript"),
    (["-o", "{root}/a_file/out.onnx"], r"cannot write .*out.onnx: .*a_file is not a folder; choose a file path"),
    (["-o", "{root}/out.pt"], r"must end in .onnx, got .*out.pt; e.g. -o .*out.onnx"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=["wrong-size-weights", "unknown-exporter", "unwritable", "suffix"])
def test_mistakes_exit_2_with_one_message_and_leave_no_files(tmp_path, capsys, argv, message):
    torch.save(ConvNeXtV2("atto").state_dict(), tmp_path / "atto.pth")
    (tmp_path / "a_file").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(root=tmp_path) for a in argv]
    if "-o" not in argv:
        argv = ["-o", str(tmp_path / "out.onnx"), *argv]
    code = cvx2_main(["export", *argv])
    output = "".join(capsys.readouterr())
    assert code == 2 and "Traceback" not in output, output
    assert re.search(message, output), output
    assert len([line for line in output.splitlines() if line.startswith("cvx2 export: error: ")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import cvx2_backbone.export.onnx as backbone_export

    def broken(path, metadata):
        raise RuntimeError("boom")

    monkeypatch.setattr(backbone_export, "_finish_onnx", broken)
    with pytest.raises(RuntimeError, match="boom"):
        export_backbone(FeatureExtractor(ConvNeXt(TINY)), tmp_path / "x.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []
    assert EXPORT_SAMPLE[0] != RUN_SHAPES[0][0] and EXPORT_SAMPLE[2:] != RUN_SHAPES[0][2:]
