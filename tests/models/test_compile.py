"""``torch.compile(backbone)``: one graph with no breaks, the plain ops only, and inductor's numbers equal eager's.

The graph is captured with a recording backend (no compilation: fast) in every mode a user compiles in: inference
and training, fp32 and bf16 autocast, V1 and V2, checkpointing per block and per stage. The inductor tests compile a
V2 with one block per stage (V2-atto's block, 1/3 of its kernels to compile: inductor's C++ compilation dominates the
time on a CPU) at a small input and compare with the eager model, fast path and plain path alike; fp32 runs in the
default suite (about 30 s on 2 busy cores, cold cache), bf16 and training are ``heavy`` (50-100 s each):

* fp32: outputs within FP32_RTOL = 5e-6 of their max (inductor sums in other orders; measured 2-4e-7 on AMD EPYC
  AVX2, 2026-12-06), gradients within GRAD_RTOL = 1e-4.
* bf16 autocast: the compiled model may round at other points than eager (inductor keeps fused intermediates in
  fp32), so it is judged against the fp32 outputs: its error may be at most HALF_FACTOR = 2 times eager bf16's own
  error plus HALF_SLACK = 1e-3, and it is within HALF_RTOL = 3e-2 of eager bf16 (the fast-path tests' bound).
"""
import copy

import pytest
import torch

from cvx2_backbone import ConvNeXt, ConvNeXtV2, ops
from cvx2_backbone.benchmark.models import randomize_

FP32_RTOL, GRAD_RTOL, HALF_RTOL, HALF_FACTOR, HALF_SLACK = 5e-6, 1e-4, 3e-2, 2.0, 1e-3
SMALL = dict(depths=[1, 2, 2, 1], dims=[16, 24, 32, 40])
ONE_BLOCK_PER_STAGE = dict(depths=[1, 1, 1, 1], dims=[16, 24, 32, 40])
# what only the fused kernels of cvx2_backbone.ops call: the plain block has none of these
FUSED_ONLY = ("_linear_pointwise", "addmm", "addcmul", "SpatialL2Norm", "addmv")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in fp64."""
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


class Recorder:
    """A dynamo backend that keeps every graph it is given and runs it as traced (no compilation)."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(gm)
        return gm.forward

    def code(self) -> str:
        """The Python code of every graph, with its subgraphs (checkpointed regions are subgraphs)."""
        return "\n".join(m.code for gm in self.graphs for m in gm.modules() if isinstance(m, torch.fx.GraphModule))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(cls=ConvNeXtV2, arch=SMALL, **kwargs) -> torch.nn.Module:
    return randomize_(cls(arch, **kwargs), 0)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("mode", ["eval-fp32", "eval-bf16", "train-fp32", "train-bf16", "train-cp-block",
                                  "train-cp-stage"])
def test_one_graph_no_breaks_plain_ops_only(cls, mode):
    with_cp = mode.split("-cp-")[1] if "-cp-" in mode else False
    model = _model(cls, drop_path_rate=0.1, with_cp=with_cp).train(mode.startswith("train"))
    x = torch.randn(2, 3, 64, 64, requires_grad=mode.startswith("train"))
    recorder = Recorder()
    compiled = torch.compile(model, backend=recorder, fullgraph=True)  # fullgraph: a graph break raises
    with ops.record_kernels() as kernels, torch.autocast("cpu", torch.bfloat16, enabled=mode.endswith("bf16")):
        outputs = compiled(x)
    if model.training:
        sum(o.float().sum() for o in outputs).backward()
    assert len(recorder.graphs) == 1
    assert dict(kernels) == {}  # the dispatcher was traced, never asked in eager mode
    code = recorder.code()
    assert not [name for name in FUSED_ONLY if name in code], code
    assert code.count("linalg_vector_norm") == (sum(SMALL["depths"]) if model.use_grn else 0)
    regions = code.count("torch.ops.higher_order.tag_activation_checkpoint(")
    assert regions == {False: 0, "block": sum(SMALL["depths"]), "stage": len(SMALL["depths"])}[with_cp], code


def test_explain_finds_one_graph_and_no_break():
    """dynamo's own account of the same (eval, fp32, V2)."""
    explanation = torch._dynamo.explain(_model().eval())(torch.randn(1, 3, 64, 64))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.op_count > 50


def test_recorder_sees_graph_breaks():
    """The check above can fail: a module with a graph break gives two graphs and a break reason."""
    class Broken(torch.nn.Module):
        def forward(self, x):
            x = x + 1
            torch._dynamo.graph_break()
            return x * 2

    recorder = Recorder()
    torch.compile(Broken(), backend=recorder)(torch.randn(2))
    assert len(recorder.graphs) == 2
    assert torch._dynamo.explain(Broken())(torch.randn(2)).graph_break_count == 1


def test_eager_calls_still_run_the_fused_kernels_after_compiling():
    """Compiling the backbone does not switch off the fast path of the same model called eagerly."""
    model = _model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.compile(model, backend=Recorder(), fullgraph=True)(x)
        with ops.record_kernels() as kernels:
            model(x)
    assert sum(kernels.values()) == sum(SMALL["depths"]) and ops.PLAIN not in kernels


@pytest.fixture(scope="module")
def small_v2():
    """A V2 with one block per stage, random weights (GRN, norms and biases too), its plain twin, a 1x3x64x96 input."""
    model = randomize_(ConvNeXtV2(ONE_BLOCK_PER_STAGE), 0).eval()
    return model, copy.deepcopy(model).set_reference_path(True), torch.randn(
        1, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def _infer(model, x, dtype=None):
    with torch.no_grad(), torch.autocast("cpu", dtype or torch.bfloat16, enabled=dtype is not None):
        return [o.float() for o in model(x)]


@pytest.mark.slow
def test_inductor_equals_eager_fp32(small_v2):
    model, plain, x = small_v2
    compiled = torch.compile(model, dynamic=False)
    actual, fast, expected = _infer(compiled, x), _infer(model, x), _infer(plain, x)
    for a, f, e in zip(actual, fast, expected):
        assert a.shape == e.shape and a.is_contiguous()
        assert rel_err(a, e) <= FP32_RTOL and rel_err(a, f) <= FP32_RTOL, (rel_err(a, e), rel_err(a, f))


@pytest.mark.heavy
def test_inductor_equals_eager_bf16_autocast(small_v2):
    model, plain, x = small_v2
    compiled = torch.compile(model, dynamic=False)
    actual, eager, fp32 = _infer(compiled, x, torch.bfloat16), _infer(plain, x, torch.bfloat16), _infer(plain, x)
    for a, e, f in zip(actual, eager, fp32):
        assert torch.isfinite(a).all()
        assert rel_err(a, f) <= HALF_FACTOR * rel_err(e, f) + HALF_SLACK, (rel_err(a, f), rel_err(e, f))
        assert rel_err(a, e) <= HALF_RTOL, rel_err(a, e)


@pytest.mark.heavy
@pytest.mark.parametrize("with_cp", [False, "stage"])
def test_inductor_training_gradients_equal_eager_fp32(with_cp):
    """Forward and backward compiled (AOT autograd): outputs and gradients of the eager training step."""
    model = _model(ConvNeXtV2, ONE_BLOCK_PER_STAGE).train()
    compiled_model = copy.deepcopy(model)
    compiled_model.with_cp = with_cp
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))

    def step(module):
        xi = x.clone().requires_grad_()
        outputs = module(xi)
        sum((o * o.detach().cos()).sum() for o in outputs).backward()
        return outputs, xi.grad

    outputs, grad_x = step(model)
    actual, actual_grad_x = step(torch.compile(compiled_model, dynamic=False))
    for a, e in zip(actual, outputs):
        assert rel_err(a.detach(), e.detach()) <= FP32_RTOL
    assert rel_err(actual_grad_x, grad_x) <= GRAD_RTOL
    for (name, p), q in zip(model.named_parameters(), compiled_model.parameters()):
        assert rel_err(q.grad, p.grad) <= GRAD_RTOL, name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_cuda_inductor_equals_eager(dtype):
    """On CUDA (triton kernels): compiled V2-atto against the eager plain path, TF32 off, as on the CPU."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = randomize_(ConvNeXtV2("atto"), 0).eval().cuda()
        plain = copy.deepcopy(model).set_reference_path(True)
        x = torch.randn(2, 3, 256, 320, generator=torch.Generator().manual_seed(1)).cuda()
        compiled = torch.compile(model, dynamic=False)
        with torch.no_grad():
            fp32 = [o.float() for o in plain(x)]
            with torch.autocast("cuda", dtype, enabled=dtype != torch.float32):
                actual = [o.float() for o in compiled(x)]
                eager = [o.float() for o in plain(x)]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
    for a, e, f in zip(actual, eager, fp32):
        assert torch.isfinite(a).all() and a.is_contiguous()
        if dtype == torch.float32:
            assert rel_err(a, e) <= FP32_RTOL, rel_err(a, e)
        else:
            assert rel_err(a, f) <= HALF_FACTOR * rel_err(e, f) + HALF_SLACK, (rel_err(a, f), rel_err(e, f))
            assert rel_err(a, e) <= HALF_RTOL, rel_err(a, e)
