"""Tracers, compilers and exporters see only the plain ops, and their graphs compute the backbone.

torch.fx (and torchvision's feature extractor on it), torch.jit.trace, torch.compile, torch.export
with a dynamic batch, and ONNX export with the TorchScript exporter (opset 17) and the dynamo
exporter, run in ONNX Runtime. Outputs are compared with eager fast-path outputs within
FP32_RTOL = 1e-5 of their scale (the fast and plain paths differ by ~1e-6).
"""
import numpy as np
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from cvx2_backbone import ConvNeXt, ConvNeXtV2, ops
from cvx2_backbone.benchmark.models import randomize_

FP32_RTOL = 1e-5
SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 24, 32, 40])
GRAPH_ONLY_OPS = ("mkldnn", "_linear_pointwise", "SpatialL2Norm", "addmv", "PythonOp")


def build(cls=ConvNeXtV2, arch=SMALL):
    return randomize_(cls(arch), 0).eval()


def assert_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        a = torch.as_tensor(a)
        assert a.shape == e.shape
        error = ((a.double() - e.double()).abs().max() / e.double().abs().max()).item()
        assert error <= FP32_RTOL, error


def eager(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_fx_symbolic_trace(cls):
    model = build(cls)
    x = torch.randn(2, 3, 64, 96)
    graph = torch.fx.symbolic_trace(model)
    code = graph.code
    assert "_spatial_l2_norm" in code if cls is ConvNeXtV2 else "_spatial_l2_norm" not in code
    assert not any(op in code for op in GRAPH_ONLY_OPS) and "fused_block_kernel" not in code
    with torch.no_grad():
        assert_close(graph(x), eager(model, x))


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_torchvision_feature_extractor(cls):
    model = build(cls)
    x = torch.randn(1, 3, 64, 64)
    extractor = create_feature_extractor(model, return_nodes={"stages.1": "c3", "norm3": "c5"})
    with torch.no_grad():
        features = extractor(x)
        expected = model(x)
        stage2 = model.stages[1](model.downsample_layers[1](
            model.stages[0](model.downsample_layers[0](x.contiguous(memory_format=torch.channels_last)))))
    assert list(features) == ["c3", "c5"]
    assert_close([features["c5"]], [expected[3]])
    assert_close([features["c3"]], [stage2])


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_only_standard_ops():
    model = build()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "aten::linalg_vector_norm" in graph and not any(op in graph for op in GRAPH_ONLY_OPS)
    with torch.no_grad():
        assert_close(traced(x), eager(model, x))


def test_compile_sees_the_plain_ops_without_graph_breaks():
    model = build()
    x = torch.randn(2, 3, 64, 64)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    code = explanation.graphs[0].code
    assert "linalg_vector_norm" in code and not any(op in code for op in GRAPH_ONLY_OPS)


def test_torch_export_with_a_dynamic_batch():
    model = build()
    batch = torch.export.Dim("batch", min=1, max=64)
    with ops.record_kernels() as kernels:
        program = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes=({0: batch},))
    assert not kernels  # nothing ran eagerly
    assert not any(op in str(program.graph) for op in GRAPH_ONLY_OPS)
    for n in (1, 3):  # other batch sizes than the one traced: no branch on the batch size
        x = torch.randn(n, 3, 64, 64)
        assert_close(program.module()(x), eager(model, x))


def _onnx_runs(path, model, batches):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in batches:
        x = torch.randn(n, 3, 64, 64)
        assert_close([np.asarray(o) for o in session.run(None, {"x": x.numpy()})], eager(model, x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_torchscript_exporter_opset17_atto(tmp_path):
    pytest.importorskip("onnxruntime")
    model = randomize_(ConvNeXtV2("atto"), 0).eval()
    path = tmp_path / "atto.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    _onnx_runs(path, model, batches=(1, 3))


@pytest.mark.heavy  # about 30 s on 2 cores
def test_onnx_dynamo_exporter_atto(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = randomize_(ConvNeXtV2("atto"), 0).eval()
    path = tmp_path / "atto.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 64, 64),), str(path), dynamo=True, input_names=["x"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    _onnx_runs(path, model, batches=(1, 3))
