"""The fast default path equals the plain reference path; the benchmark measures what it claims.

Tolerance: fast and reference paths compute the same function with different summation orders
(GRN and layer scale folded into pwconv2, oneDNN vs BLAS GEMMs, blocked GRN statistics). In fp32
each output differs by a few float32 epsilons of the output's scale (measured: ~1e-6 relative
to max |output| after a whole network), so outputs must agree within FP32_RTOL = 1e-5 of the
tensor's max |value|, gradients within GRAD_RTOL = 1e-4 (they sum over more terms). A real bug
(a dropped beta, a wrong scale, a transposed weight) shows up at 1e-3 or more. bf16 runs round
at different points (bf16 epsilon 2^-8 = 4e-3), so they are compared within BF16_RTOL = 5e-2.
fp64 checks the algebra itself to 1e-10.
"""
import copy
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cvx2_backbone import ConvNeXt, ConvNeXtV2, cli
from cvx2_backbone.benchmark import (Case, build_models, check_parity, make_step, peak_memory_mib, randomize_,
                                     stage_outputs)
from cvx2_backbone.convnext import GRN, Block, _SpatialL2Norm

FP32_RTOL, GRAD_RTOL, BF16_RTOL, FP64_RTOL = 1e-5, 1e-4, 5e-2, 1e-10
SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 24, 32, 40])


def build(cls=ConvNeXtV2, seed=0, **kwargs):
    """A small backbone with random GRN, layer scale, norms and biases, and its reference twin."""
    model = randomize_(cls(SMALL, out_norm=False, **kwargs), seed)
    return model, copy.deepcopy(model).set_reference_path(True)


def rel_err(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


def assert_outputs_close(actual, expected, rtol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        assert rel_err(a, e) <= rtol, f"relative error {rel_err(a, e):.2e} > {rtol:.0e} at shape {tuple(e.shape)}"


def run_with_grads(model, x, upstream):
    """Outputs, d(loss)/d(input) and d(loss)/d(every parameter) for loss = sum(out * upstream)."""
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    outputs = model(x)
    sum((o.float() * u).sum() for o, u in zip(outputs, upstream)).backward()
    grads = {"input": x.grad}
    grads.update({name: p.grad for name, p in model.named_parameters() if p.requires_grad})
    return [o.detach() for o in outputs], grads


def upstream_for(model, x):
    with torch.no_grad():
        return [torch.randn(o.shape, generator=torch.Generator().manual_seed(1)) for o in model(x)]


@pytest.fixture
def threads():
    """Set torch's CPU threads for one test (with 1 thread torch runs small 1x1 convolutions on BLAS,
    so the fast path uses F.linear)."""
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


# --- fp32: outputs and gradients --------------------------------------------------------------
@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("shape", [(1, 3, 65, 97), (3, 3, 32, 32), (2, 3, 97, 65)])
@pytest.mark.parametrize("grad_enabled", [False, True], ids=["no_grad", "grad"])
def test_eval_outputs_match_reference(cls, shape, grad_enabled):
    model, reference = build(cls)
    model.eval(), reference.eval()
    x = torch.randn(shape)
    with torch.set_grad_enabled(grad_enabled):  # no_grad: the oneDNN inference path; grad: the autograd path
        assert_outputs_close(model(x), reference(x), FP32_RTOL)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_training_outputs_and_gradients_match_reference(cls, batch, num_threads, threads):
    threads(num_threads)
    model, reference = build(cls)
    model.train(), reference.train()
    x = torch.randn(batch, 3, 65, 97)
    upstream = upstream_for(reference, x)
    outputs, grads = run_with_grads(model, x, upstream)
    ref_outputs, ref_grads = run_with_grads(reference, x, upstream)
    assert_outputs_close(outputs, ref_outputs, FP32_RTOL)
    assert grads.keys() == ref_grads.keys() and len(grads) == 1 + len(list(model.parameters()))
    for name in grads:
        assert rel_err(grads[name], ref_grads[name]) <= GRAD_RTOL, name


def test_fp64_fast_path_is_the_same_function():
    """In fp64 the folded formulation matches the reference to rounding: the algebra is exact."""
    model, reference = build(ConvNeXtV2)
    model, reference = model.double().train(), reference.double().train()
    x = torch.randn(2, 3, 33, 47, dtype=torch.float64)
    upstream = [u.double() for u in upstream_for(reference, x)]
    outputs, grads = run_with_grads(model, x, upstream)
    ref_outputs, ref_grads = run_with_grads(reference, x, upstream)
    assert_outputs_close(outputs, ref_outputs, FP64_RTOL)
    for name in grads:
        assert rel_err(grads[name], ref_grads[name]) <= FP64_RTOL, name


def test_drop_path_draws_the_same_masks():
    model, reference = build(ConvNeXtV2, drop_path_rate=0.5)
    model.train(), reference.train()
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(3)
    fast = model(x)
    torch.manual_seed(3)
    assert_outputs_close(fast, reference(x), FP32_RTOL)


def test_frozen_stages_mix_inference_and_autograd_paths():
    """Frozen blocks need no gradient (the oneDNN path); the rest still match the reference."""
    model, reference = build(ConvNeXtV2, frozen_stages=2)
    model.train(), reference.train()
    x = torch.randn(2, 3, 64, 64)
    upstream = upstream_for(reference, x)
    outputs, grads = run_with_grads(model, x, upstream)
    ref_outputs, ref_grads = run_with_grads(reference, x, upstream)
    assert_outputs_close(outputs, ref_outputs, FP32_RTOL)
    assert not any(name.startswith(("stages.0", "stages.1", "downsample_layers.0")) for name in grads)
    for name in grads:
        assert rel_err(grads[name], ref_grads[name]) <= GRAD_RTOL, name


@pytest.mark.parametrize("hidden_act", ["gelu_tanh", "relu", "silu", "mish"])
def test_other_activations(hidden_act):
    """Activations oneDNN fuses (gelu_tanh, relu, silu) and one it does not (mish)."""
    model, reference = build(ConvNeXtV2, hidden_act=hidden_act)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_outputs_close(model.eval()(x), reference.eval()(x), FP32_RTOL)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_with_cp_gives_identical_outputs_and_gradients(cls):
    model, _ = build(cls, drop_path_rate=0.2)
    checkpointed = copy.deepcopy(model)
    checkpointed.with_cp = True
    model.train(), checkpointed.train()
    x = torch.randn(2, 3, 64, 64)
    upstream = upstream_for(model, x)
    torch.manual_seed(5)
    outputs, grads = run_with_grads(model, x, upstream)
    torch.manual_seed(5)
    cp_outputs, cp_grads = run_with_grads(checkpointed, x, upstream)
    for a, b in zip(outputs, cp_outputs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(grads[name], cp_grads[name], rtol=0, atol=0)


def test_with_cp_saves_training_memory():
    """Peak memory of a training step (gradients included) drops with checkpointing, even at a small size."""
    model = randomize_(ConvNeXtV2("atto", out_norm=False), 0)
    x = torch.randn(1, 3, 160, 160)
    peaks = {}
    for name in ("train-fp32", "train-fp32-cp"):
        step = make_step("cvx2", model, Case.parse(name), x)
        step()  # first-call allocations do not count
        peaks[name] = peak_memory_mib(step, torch.device("cpu"))
    grads_mib = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert peaks["train-fp32"] > peaks["train-fp32-cp"] > grads_mib, peaks
    assert peaks["train-fp32-cp"] < 0.8 * peaks["train-fp32"], peaks


# --- bf16 ---------------------------------------------------------------------------------------
class _RecordDtypes(TorchDispatchMode):
    """Records the input dtype of every matrix product (linear, 1x1 or dw convolution, oneDNN linear)."""

    MATMULS = ("addmm", "mm", "bmm", "baddbmm", "convolution", "_linear_pointwise", "linear")

    def __init__(self):
        super().__init__()
        self.dtypes = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.MATMULS:
            self.dtypes.setdefault(name, set()).add(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_autocast_bf16_matches_reference_and_runs_matmuls_in_bf16(cls, mode):
    model, reference = build(cls)
    model.train(mode == "training"), reference.train(mode == "training")
    x = torch.randn(2, 3, 65, 97)
    with torch.set_grad_enabled(mode == "training"), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(x)
        with _RecordDtypes() as recorded:
            outputs = model(x)
    assert_outputs_close(outputs, expected, BF16_RTOL)
    assert recorded.dtypes and all(d == {torch.bfloat16} for d in recorded.dtypes.values()), recorded.dtypes
    if mode == "training":
        sum(o.float().sum() for o in outputs).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_weights_without_autocast():
    model, reference = build(ConvNeXtV2)
    model, reference = model.bfloat16().eval(), reference.bfloat16().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        assert_outputs_close(model(x), reference(x), BF16_RTOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_grn_statistics_are_fp32_and_finite_for_large_activations(dtype):
    """Squares of 1e3 overflow fp16 (max 65504); the statistics must stay fp32 and exact."""
    grn = GRN(32)
    with torch.no_grad():
        grn.gamma.normal_()
    x = (torch.randn(2, 9, 11, 32) * 1e3).to(dtype)
    scale = grn.response_scale(x)
    gx = torch.linalg.vector_norm(x.double(), dim=(1, 2))
    expected = 1 + grn.gamma.double() * gx / (gx.mean(-1, keepdim=True) + grn.eps)
    assert scale.dtype == torch.float32 and torch.isfinite(scale).all()
    assert rel_err(scale, expected) <= 1e-6


# --- the blocked GRN norm -----------------------------------------------------------------------
def test_spatial_norm_blocks_match_vector_norm_and_gradcheck(monkeypatch):
    monkeypatch.setattr(_SpatialL2Norm, "block_bytes", 4 * 2 * 3 * 8)  # 4 rows per block: 30 rows leave a remainder
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64, requires_grad=True)
    norm = _SpatialL2Norm.apply(x, torch.float64)
    torch.testing.assert_close(norm, torch.linalg.vector_norm(x, dim=(1, 2)), rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(lambda t: _SpatialL2Norm.apply(t, torch.float64), (x,))


def test_spatial_norm_of_a_zero_channel_has_zero_gradient():
    x = torch.randn(2, 5, 5, 6)
    x[:, :, :, 2] = 0
    x.requires_grad_()
    _SpatialL2Norm.apply(x, torch.float32).sum().backward()
    assert torch.isfinite(x.grad).all() and not x.grad[:, :, :, 2].any()


def test_fast_path_is_the_default():
    model = ConvNeXtV2(SMALL)
    assert not any(block.use_reference for block in model.modules() if isinstance(block, Block))
    assert all(block.use_reference for block in model.set_reference_path(True).modules() if isinstance(block, Block))


def test_compiles_without_graph_breaks():
    model, _ = build(ConvNeXtV2)
    explanation = torch._dynamo.explain(model.eval())(torch.randn(2, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_tracing_records_only_standard_ops():
    """torch.jit.trace (TorchScript ONNX export) sees no oneDNN-only op and no Python autograd function."""
    model, reference = build(ConvNeXtV2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), x, check_trace=False)
        graph = str(traced.inlined_graph)
        assert "mkldnn" not in graph and "PythonOp" not in graph
        assert_outputs_close(traced(x), reference.eval()(x), FP32_RTOL)


# --- the benchmark ------------------------------------------------------------------------------
def test_benchmark_loads_the_same_weights_into_timm_and_hugging_face():
    models = build_models("atto", ["cvx2", "timm", "hf", "reference"], seed=0)
    assert set(models) == {"cvx2", "timm", "hf", "reference"}
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


@pytest.mark.parametrize("name,error", [("infer-fp16", "unknown case"), ("infer-fp32-cp", "only matters for train"),
                                        ("train", "unknown case")])
def test_benchmark_rejects_bad_cases(name, error):
    with pytest.raises(ValueError, match=error):
        Case.parse(name)


@pytest.mark.parametrize("argv,error", [(["--sizes", "tinyy"], "unknown size"), (["--repeats", "0"], "at least 1"),
                                        (["--impls", "cvx2,onnx"], "unknown implementation"),
                                        (["--resolution", "16"], "at least 32")])
def test_bench_command_rejects_bad_arguments(argv, error, capsys):
    assert cli.main(["bench", *argv]) == 2  # a usage error: one message, no traceback
    assert error in capsys.readouterr().err


def test_bench_command_prints_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--sizes", "atto", "--cases", "infer-fp32,train-fp32@det,train-fp32-cp@det",
                     "--batch", "2", "--resolution", "64", "--det-resolution", "96", "--repeats", "2",
                     "--det-repeats", "1", "--warmup", "1", "--threads", "1", "--markdown", "--json", str(path)])
    assert code == 0
    out, err = capsys.readouterr()
    assert "img/s" in out and "x timm" in out and "outputs agree" in out
    assert "| atto | train-fp32-cp@det | 1x96 | cvx2 |" in out and "| atto | with_cp training memory saving |" in out
    assert "hf has no gradient checkpointing" in err
    report = json.loads(path.read_text())
    rows = {(r["case"], r["impl"]): r for r in report["results"]}
    assert set(rows) == {("infer-fp32", "cvx2"), ("infer-fp32", "timm"), ("infer-fp32", "hf"),
                         ("train-fp32@det", "cvx2"), ("train-fp32@det", "timm"), ("train-fp32@det", "hf"),
                         ("train-fp32-cp@det", "cvx2"), ("train-fp32-cp@det", "timm")}
    assert all(r["img_per_s"] > 0 and r["peak_mib"] > 0 and len(r["seconds"]) >= 1 for r in rows.values())
    assert rows[("infer-fp32", "timm")]["ratio_to_timm"] == 1.0
    assert rows[("train-fp32@det", "cvx2")]["resolution"] == 96
    checks = report["summary"]["atto"]
    assert set(checks) == {"eager fp32 inference vs timm", "with_cp training memory saving"}
    assert report["meta"]["threads"] == 1 and report["parity"]["atto"]["timm"] < 1e-5
