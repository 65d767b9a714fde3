"""The fused kernels of cvx2_backbone.ops equal the plain block, in every precision, and run when they should.

Tolerances (max |fast - plain| over an output or gradient, relative to its max |value|):

* fp32: outputs FP32_RTOL = 1e-5, gradients GRAD_RTOL = 1e-4. Both paths compute the same function
  with different summation orders (folds, other GEMMs, blocked GRN statistics); measured ~1e-6.
  A real bug (a dropped beta, a wrong scale, a transposed weight) shows up at 1e-3 or more.
* fp64: FP64_RTOL = 1e-10, which checks the algebra of the folds itself.
* bf16 / fp16 autocast: outputs HALF_RTOL = 3e-2 (max-relative, as above). Gradients are judged
  against the fp32 gradients of the plain path: per tensor, the fast path's relative L2 error
  ||fast - fp32|| / ||fp32|| may be at most HALF_GRAD_FACTOR = 2 times the plain path's own
  ||plain - fp32|| / ||fp32|| plus HALF_GRAD_SLACK (bf16 1e-2, fp16 2e-3): the fast path is as
  accurate as the plain one, not merely close to it. Each path rounds to the half type at different
  points (bf16's epsilon is 2^-8 = 4e-3, fp16's 2^-11 = 5e-4): the plain path's own bf16 gradients
  are up to 12% (L2) away from fp32 with large activations, and the fast path's error was at most
  1.6 times the plain path's (AMD EPYC, AVX2, 2026-12-01). A real bug (the fp16 underflow of a folded
  layer scale) gave 0.55.
  The cases include V1's initial layer scale 1e-6 (folded into an fp16 weight it underflows: the
  relative error was 0.55), trained-like layer scales (1e-2..1) and activations whose fp16 sum of
  squares overflows.

Every test asserts which kernel ran (cvx2_backbone.ops.record_kernels).
"""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cvx2_backbone import ConvNeXt, ConvNeXtV2, ops
from cvx2_backbone.benchmark.models import randomize_
from cvx2_backbone.benchmark.run import Case, make_step, peak_memory_mib
from cvx2_backbone.models.convnext import GRN, Block
from cvx2_backbone.ops import grn as grn_ops
from cvx2_backbone.ops import linear

FP32_RTOL, GRAD_RTOL, HALF_RTOL, FP64_RTOL = 1e-5, 1e-4, 3e-2, 1e-10
HALF_GRAD_FACTOR, HALF_GRAD_SLACK = 2.0, {torch.bfloat16: 1e-2, torch.float16: 2e-3}
SMALL = dict(depths=[1, 1, 2, 1], dims=[16, 24, 32, 40])
BLOCKS = sum(SMALL["depths"])
INFERENCE = ops.ONEDNN_INFERENCE if linear.preferred() is linear.OneDnnLinears else ops.BLAS_INFERENCE
HALF_NATIVE = {dtype: dtype in linear.INFERENCE_DTYPES for dtype in (torch.bfloat16, torch.float16)}


def build(cls=ConvNeXtV2, seed=0, layer_scale=None, activation_scale=1.0, **kwargs):
    """A small backbone with random GRN, layer scale, norms and biases, and its plain twin.

    ``layer_scale='trained'`` draws every layer scale log-uniformly from 1e-2..1; ``activation_scale``
    multiplies the block LayerNorms' weights (hidden activations grow by about that factor).
    """
    if layer_scale == "trained":
        kwargs["layer_scale_init_value"] = 1.0
    model = randomize_(cls(SMALL, out_norm=False, **kwargs), seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, Block):
                if layer_scale == "trained":
                    block.gamma.copy_(10 ** (-2 * torch.rand(block.gamma.shape, generator=generator)))
                elif layer_scale is None and block.gamma is not None:
                    block.gamma.fill_(model.default_layer_scale)
                block.norm.weight.mul_(activation_scale)
    return model, copy.deepcopy(model).set_reference_path(True)


def rel_err(actual, expected):
    scale = expected.double().abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def assert_outputs_close(actual, expected, rtol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        assert torch.isfinite(a).all()
        assert rel_err(a, e) <= rtol, f"relative error {rel_err(a, e):.2e} > {rtol:.0e} at shape {tuple(e.shape)}"


def assert_grads_close(grads, expected, rtol):
    assert grads.keys() == expected.keys()
    for name in grads:
        assert torch.isfinite(grads[name]).all(), name
        assert rel_err(grads[name], expected[name]) <= rtol, (name, rel_err(grads[name], expected[name]))


def run(model, x, upstream=None, autocast=None, input_grad=True):
    """Outputs, the kernels that ran and, given ``upstream``, d(sum(out * upstream))/d(input and parameters)."""
    x = x.clone().requires_grad_(upstream is not None and input_grad)
    model.zero_grad(set_to_none=True)
    with ops.record_kernels() as kernels, torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        outputs = model(x)
    grads = {}
    if upstream is not None:
        sum((o.float() * u).sum() for o, u in zip(outputs, upstream)).backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
        if x.requires_grad:
            grads["input"] = x.grad
    return [o.detach() for o in outputs], dict(kernels), grads


def upstream_for(model, x):
    with torch.no_grad():
        return [torch.randn(o.shape, generator=torch.Generator().manual_seed(1)) for o in model(x)]


@pytest.fixture
def threads():
    """Set torch's CPU threads for one test (with 1 thread torch runs small 1x1 convolutions on its slow path)."""
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


@pytest.fixture(params=[linear.OneDnnLinears, linear.BlasLinears], ids=["onednn", "blas"])
def inference_kernel(request, monkeypatch):
    """Run the CPU inference kernel on oneDNN's linears and on the BLAS, whichever this CPU prefers."""
    monkeypatch.setattr(linear, "preferred", lambda: request.param)
    return ops.ONEDNN_INFERENCE if request.param is linear.OneDnnLinears else ops.BLAS_INFERENCE


# --- fp32: outputs and gradients --------------------------------------------------------------
@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("shape", [(1, 3, 65, 97), (3, 3, 32, 32), (2, 3, 97, 65), (1, 3, 256, 256)])
def test_inference_kernel_matches_plain(cls, shape, inference_kernel):
    """Both GEMM back ends; batch 1 (GRN scale folded where the map is large) and batches (h rescaled)."""
    model, plain = build(cls, layer_scale="trained")
    x = torch.randn(shape)
    with torch.no_grad():
        outputs, kernels, _ = run(model.eval(), x)
        expected, plain_kernels, _ = run(plain.eval(), x)
    assert kernels == {inference_kernel: BLOCKS} and plain_kernels == {ops.PLAIN: BLOCKS}
    assert_outputs_close(outputs, expected, FP32_RTOL)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_training_outputs_and_gradients_match_plain(cls, batch, num_threads, threads):
    threads(num_threads)
    model, plain = build(cls, layer_scale="trained")
    model.train(), plain.train()
    x = torch.randn(batch, 3, 65, 97)
    upstream = upstream_for(plain, x)
    outputs, kernels, grads = run(model, x, upstream)
    expected, _, expected_grads = run(plain, x, upstream)
    assert kernels == {ops.FOLDED_AUTOGRAD: BLOCKS}
    assert_outputs_close(outputs, expected, FP32_RTOL)
    assert len(grads) == 1 + len(list(model.parameters()))
    assert_grads_close(grads, expected_grads, GRAD_RTOL)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_training_with_onednn_1x1_convolutions_matches_plain(cls, monkeypatch, threads):
    """Where oneDNN is the preferred GEMM (AVX-512 CPUs), the pointwise layers train as 1x1 convolutions."""
    threads(2)  # torch runs small 1x1 convolutions on oneDNN with several threads
    monkeypatch.setattr(linear, "preferred", lambda: linear.OneDnnLinears)
    model, plain = build(cls, layer_scale="trained")
    model.train(), plain.train()
    x = torch.randn(2, 3, 65, 97)
    upstream = upstream_for(plain, x)
    with _RecordOps() as recorded:
        outputs, kernels, grads = run(model, x, upstream)
    expected, _, expected_grads = run(plain, x, upstream)
    assert kernels == {ops.FOLDED_AUTOGRAD: BLOCKS}
    assert recorded.pointwise_convolutions == 2 * BLOCKS  # pwconv1 and pwconv2 of every block
    assert_outputs_close(outputs, expected, FP32_RTOL)
    assert_grads_close(grads, expected_grads, GRAD_RTOL)


class _RecordOps(TorchDispatchMode):
    """Counts the 1x1 convolutions that run."""

    def __init__(self):
        super().__init__()
        self.pointwise_convolutions = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ == "convolution" and tuple(args[1].shape[-2:]) == (1, 1):
            self.pointwise_convolutions += 1
        return func(*args, **(kwargs or {}))


def test_eval_with_gradients_runs_the_autograd_kernel():
    model, plain = build(ConvNeXt)
    x = torch.randn(2, 3, 64, 64)
    outputs, kernels, _ = run(model.eval(), x)
    assert kernels == {ops.FOLDED_AUTOGRAD: BLOCKS}
    assert_outputs_close(outputs, run(plain.eval(), x)[0], FP32_RTOL)


def test_fp64_fast_path_is_the_same_function():
    """In fp64 the folded formulation matches the plain one to rounding: the algebra is exact."""
    model, plain = build(ConvNeXt, layer_scale="trained", use_grn=True)
    model, plain = model.double().train(), plain.double().train()
    x = torch.randn(2, 3, 33, 47, dtype=torch.float64)
    upstream = [u.double() for u in upstream_for(plain, x)]
    outputs, kernels, grads = run(model, x, upstream)
    expected, _, expected_grads = run(plain, x, upstream)
    assert kernels == {ops.FOLDED_AUTOGRAD: BLOCKS}
    assert_outputs_close(outputs, expected, FP64_RTOL)
    assert_grads_close(grads, expected_grads, FP64_RTOL)


def test_drop_path_draws_the_same_masks():
    model, plain = build(ConvNeXtV2, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(3)
    with torch.no_grad():  # active drop path needs the autograd kernel even without gradients
        outputs, kernels, _ = run(model.train(), x)
    torch.manual_seed(3)
    with torch.no_grad():
        expected = plain.train()(x)
    assert kernels == {ops.FOLDED_AUTOGRAD: BLOCKS - 1, INFERENCE: 1}  # the first block has rate 0
    assert_outputs_close(outputs, expected, FP32_RTOL)


def test_frozen_stages_mix_inference_and_autograd_kernels():
    """Frozen blocks need no gradient (the inference kernel); the rest still match the plain path."""
    model, plain = build(ConvNeXtV2, frozen_stages=2)
    model.train(), plain.train()
    x = torch.randn(2, 3, 64, 64)
    upstream = upstream_for(plain, x)
    outputs, kernels, grads = run(model, x, upstream, input_grad=False)
    expected, _, expected_grads = run(plain, x, upstream, input_grad=False)
    assert kernels == {INFERENCE: 2, ops.FOLDED_AUTOGRAD: 3}
    assert_outputs_close(outputs, expected, FP32_RTOL)
    assert not any(name.startswith(("stages.0", "stages.1", "downsample_layers.0")) for name in grads)
    assert_grads_close(grads, expected_grads, GRAD_RTOL)


@pytest.mark.parametrize("hidden_act", ["gelu_tanh", "relu", "silu", "mish"])
def test_other_activations(hidden_act, inference_kernel):
    """Activations both back ends fuse or apply in place (gelu_tanh, relu, silu) and one they do not (mish)."""
    model, plain = build(ConvNeXtV2, hidden_act=hidden_act)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outputs, kernels, _ = run(model.eval(), x)
        assert kernels == {inference_kernel: BLOCKS}
        assert_outputs_close(outputs, plain.eval()(x), FP32_RTOL)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_with_cp_gives_identical_outputs_and_gradients(cls):
    model, _ = build(cls, drop_path_rate=0.2)
    checkpointed = copy.deepcopy(model)
    checkpointed.with_cp = True
    model.train(), checkpointed.train()
    x = torch.randn(2, 3, 64, 64)
    upstream = upstream_for(model, x)
    torch.manual_seed(5)
    outputs, _, grads = run(model, x, upstream)
    torch.manual_seed(5)
    cp_outputs, _, cp_grads = run(checkpointed, x, upstream)
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


# --- half precision -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layer_scale,activation_scale", [(None, 1.0), ("trained", 1000.0)],
                         ids=["init", "trained-large-activations"])
def test_autocast_matches_plain(dtype, cls, mode, layer_scale, activation_scale):
    """Under autocast the fused kernels equal the plain block under the same autocast, outputs and gradients."""
    model, plain = build(cls, layer_scale=layer_scale, activation_scale=activation_scale)
    model.train(mode == "train"), plain.train(mode == "train")
    # small: half precision runs on slow kernels on CPUs without native support
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    upstream = upstream_for(plain, x) if mode == "train" else None
    with torch.set_grad_enabled(mode == "train"):
        outputs, kernels, grads = run(model, x, upstream, autocast=dtype)
        expected, _, expected_grads = run(plain, x, upstream, autocast=dtype)
        _, _, fp32_grads = run(plain, x, upstream) if mode == "train" else (None, None, {})
    native = mode == "eval" and HALF_NATIVE[dtype]
    assert kernels == {INFERENCE if native else ops.FOLDED_AUTOGRAD: BLOCKS}
    assert_outputs_close(outputs, expected, HALF_RTOL)
    if mode == "train":
        assert grads.keys() == expected_grads.keys() == fp32_grads.keys()
        for name, grad in grads.items():
            assert torch.isfinite(grad).all(), name
            fast_error = _l2_error(grad, fp32_grads[name])
            plain_error = _l2_error(expected_grads[name], fp32_grads[name])
            bound = HALF_GRAD_FACTOR * plain_error + HALF_GRAD_SLACK[dtype]
            assert fast_error <= bound, (name, fast_error, plain_error)
    if activation_scale > 1:  # the case is what it claims: a naive fp16 sum of squares of GRN's input overflows
        hidden = _first_hidden(model, x, dtype)
        assert not torch.isfinite(hidden.half().pow(2).sum(dim=(1, 2))).all()


def _l2_error(actual, expected):
    """||actual - expected|| / ||expected|| in fp64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-300)).item()


def _first_hidden(model, x, dtype):
    """The input of the first block's GRN (or of its pwconv2 for V1)."""
    block = model.stages[0][0]
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        stem = model.downsample_layers[0](x.contiguous(memory_format=torch.channels_last))
        return block.act(block.pwconv1(block.norm(block.dwconv(stem).permute(0, 2, 3, 1))))


def test_fp16_layer_scale_fold_would_underflow():
    """At V1's initial layer scale, pwconv2's weight times the scale is below fp16's range: folding it
    there (what the kernels avoid in fp16) would zero most of the branch."""
    model, _ = build(ConvNeXt)
    block = model.stages[0][0]
    folded = (block.pwconv2.weight * block.gamma[:, None]).half()
    assert (folded == 0).float().mean() > 0.5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_weights_without_autocast(dtype):
    model, plain = build(ConvNeXtV2)
    model, plain = model.to(dtype).eval(), plain.to(dtype).eval()
    x = torch.randn(2, 3, 64, 64, dtype=dtype)
    with torch.no_grad():
        outputs, kernels, _ = run(model, x)
        expected = plain(x)
    assert kernels == {INFERENCE if HALF_NATIVE[dtype] else ops.FOLDED_AUTOGRAD: BLOCKS}
    assert_outputs_close(outputs, expected, HALF_RTOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_grn_statistics_are_fp32_and_finite_for_large_activations(dtype):
    """Squares of 1e3 overflow fp16 (max 65504); the statistics must stay fp32 and exact, in both GRNs."""
    grn = GRN(32)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    x = (torch.randn(2, 9, 11, 32) * 1e3).to(dtype)
    scale = grn_ops.response_scale(grn, x)
    gx = torch.linalg.vector_norm(x.double(), dim=(1, 2))
    expected = 1 + grn.gamma.double() * gx / (gx.mean(-1, keepdim=True) + grn.eps)
    assert scale.dtype == torch.float32 and torch.isfinite(scale).all()
    assert rel_err(scale, expected) <= 1e-6
    plain = grn(x)
    assert torch.isfinite(plain).all()
    assert rel_err(plain, x.double() * expected[:, None, None, :] + grn.beta.double()) <= 1e-2


# --- the blocked GRN norm -----------------------------------------------------------------------
def test_spatial_norm_blocks_match_vector_norm_and_gradcheck(monkeypatch):
    monkeypatch.setattr(grn_ops, "SQUARES_BLOCK_BYTES", 4 * 2 * 3 * 8)  # 4 rows per block: 30 rows leave a remainder
    assert grn_ops.block_rows(2, 30, 3, 8) == 4
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64, requires_grad=True)
    norm = grn_ops.SpatialL2Norm.apply(x, torch.float64)
    torch.testing.assert_close(norm, torch.linalg.vector_norm(x, dim=(1, 2)), rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(lambda t: grn_ops.SpatialL2Norm.apply(t, torch.float64), (x,))


def test_spatial_norm_of_a_zero_channel_has_zero_gradient():
    x = torch.randn(2, 5, 5, 6)
    x[:, :, :, 2] = 0
    x.requires_grad_()
    grn_ops.SpatialL2Norm.apply(x, torch.float32).sum().backward()
    assert torch.isfinite(x.grad).all() and not x.grad[:, :, :, 2].any()


# --- empty batches ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("kernel", [ops.PLAIN, ops.ONEDNN_INFERENCE, ops.BLAS_INFERENCE, ops.FOLDED_AUTOGRAD])
def test_every_kernel_returns_empty_maps_for_an_empty_batch(cls, kernel, monkeypatch):
    model, _ = build(cls)
    monkeypatch.setattr(linear, "preferred",
                        lambda: linear.BlasLinears if kernel == ops.BLAS_INFERENCE else linear.OneDnnLinears)
    x = torch.randn(0, 3, 64, 64, requires_grad=kernel == ops.FOLDED_AUTOGRAD)
    with torch.set_grad_enabled(kernel == ops.FOLDED_AUTOGRAD), (ops.plain_ops() if kernel == ops.PLAIN
                                                                 else torch.autocast("cpu", enabled=False)):
        with ops.record_kernels() as kernels:
            outputs = model.eval()(x)
    assert dict(kernels) == {kernel: BLOCKS}
    assert [tuple(o.shape) for o in outputs] == [(0, c, 64 // s, 64 // s)
                                                 for c, s in zip(model.out_channels, model.out_strides)]
    if x.requires_grad:
        sum(o.sum() for o in outputs).backward()
        assert x.grad.shape == x.shape


# --- the switches -------------------------------------------------------------------------------
def _kernels_of(model, x):
    with torch.no_grad(), ops.record_kernels() as kernels:
        outputs = model(x)
    return outputs, dict(kernels)


@pytest.mark.parametrize("switch", ["argument", "attribute", "set_reference_path", "env", "mkldnn_enabled",
                                    "mkldnn_flags", "plain_ops"])
def test_every_switch_selects_the_plain_ops(switch, monkeypatch):
    model, plain = build(ConvNeXtV2, fast_path="off" if switch == "argument" else "auto")
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    assert _kernels_of(model, x)[1] == ({ops.PLAIN: BLOCKS} if switch == "argument" else {INFERENCE: BLOCKS})
    if switch == "attribute":
        model.fast_path = "off"
    elif switch == "set_reference_path":
        model.set_reference_path(True)
    elif switch == "env":
        monkeypatch.setenv("CVX2_FAST_PATH", "0")
    elif switch == "mkldnn_enabled":
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    scoped = {"mkldnn_flags": lambda: torch.backends.mkldnn.flags(enabled=False), "plain_ops": ops.plain_ops}
    with scoped.get(switch, torch.no_grad)():
        outputs, kernels = _kernels_of(model, x)
    assert kernels == {ops.PLAIN: BLOCKS}
    assert model.fast_path == ("off" if switch in ("argument", "attribute", "set_reference_path") else "auto")
    with scoped.get(switch, torch.no_grad)(), torch.no_grad():
        expected = plain.eval()(x)
    for a, b in zip(outputs, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the plain ops, exactly
    if switch in scoped:  # a scoped switch ends with its block
        assert _kernels_of(model, x)[1] == {INFERENCE: BLOCKS}


def test_switch_errors_name_the_accepted_values(monkeypatch):
    with pytest.raises(ValueError, match=r"fast_path must be one of \('auto', 'off'\), got 'fast'"):
        ConvNeXtV2(SMALL, fast_path="fast")
    model = ConvNeXtV2(SMALL).eval()
    with pytest.raises(ValueError, match="fast_path must be one of"):
        model.fast_path = True
    monkeypatch.setenv("CVX2_FAST_PATH", "maybe")
    with pytest.raises(ValueError, match=r"CVX2_FAST_PATH='maybe' is not understood; set it to 0"):
        model(torch.randn(1, 3, 32, 32))


def test_fast_path_is_the_default():
    model = ConvNeXtV2(SMALL)
    assert model.fast_path == "auto" and all(b.fast_path for b in model.modules() if isinstance(b, Block))
    assert model.set_reference_path(True).fast_path == "off"
    assert not any(b.fast_path for b in model.modules() if isinstance(b, Block))


def test_inference_casts_each_weight_once_and_again_only_after_it_changes():
    from cvx2_backbone.ops.casts import cast_once

    layer = torch.nn.Linear(8, 16)
    first = cast_once(layer.weight, torch.bfloat16)
    assert first is cast_once(layer.weight, torch.bfloat16) and torch.equal(first, layer.weight.to(torch.bfloat16))
    assert cast_once(layer.weight, torch.float32) is layer.weight
    with torch.no_grad():
        layer.weight.mul_(2)  # in place: an optimizer step, load_state_dict
    second = cast_once(layer.weight, torch.bfloat16)
    assert second is not first and torch.equal(second, layer.weight.to(torch.bfloat16))
    layer.weight.data = torch.randn(16, 8)  # a new storage
    assert torch.equal(cast_once(layer.weight, torch.bfloat16), layer.weight.to(torch.bfloat16))
    folded = layer.weight * 3  # not a parameter: cast as it comes, never kept
    assert cast_once(folded, torch.bfloat16) is not cast_once(folded, torch.bfloat16)


@pytest.mark.skipif(not HALF_NATIVE[torch.bfloat16], reason="this CPU only emulates bf16")
def test_bf16_inference_with_cached_weights_equals_the_plain_path_and_follows_weight_changes():
    model, _ = build()
    model.eval()
    for x in (torch.randn(1, 3, 64, 96), torch.randn(2, 3, 64, 64)):  # GRN folded into the weight, and not
        for _ in range(2):  # the second call runs on the cached bf16 weights
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), ops.record_kernels() as counts:
                fast = model(x)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), ops.plain_ops():
                plain = model(x)
            assert counts == {INFERENCE: BLOCKS}
            assert_outputs_close(fast, plain, HALF_RTOL)
            with torch.no_grad():
                model.stages[0][0].pwconv1.weight.mul_(-1)  # the cached copy must follow


def test_a_folded_weight_is_rounded_once_to_the_inference_dtype_with_the_same_values():
    from cvx2_backbone.ops.block import apply_grn, fold_scale_into_weight

    model, _ = build()
    block = model.stages[0][0]
    h = torch.randn(1, 16, 24, 4 * SMALL["dims"][0])  # one image, more values than pwconv2's weight: folded
    assert fold_scale_into_weight(h, block.pwconv2.weight)
    with torch.no_grad():
        _, rounded_once, bias = apply_grn(block, h.clone(), inplace=True, weight_dtype=torch.bfloat16)
        _, folded, same_bias = apply_grn(block, h.clone(), inplace=True)
    assert rounded_once.dtype == torch.bfloat16 and torch.equal(rounded_once, folded.to(torch.bfloat16))
    assert torch.equal(bias, same_bias)
