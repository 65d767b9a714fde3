"""Gradient checkpointing granularity (``with_cp``): per block and per stage give the gradients of the plain step.

Both recompute the checkpointed forward in the backward pass with the same ops, the same kernel and the same
drop-path masks (checkpoint restores the RNG state), so outputs and gradients are bit-identical to the
non-checkpointed step (fp32); only what is kept between forward and backward differs.
"""
import copy

import pytest
import torch

from cvx2_backbone import ConvNeXt, ConvNeXtV2, ops
from cvx2_backbone.benchmark.models import randomize_
from cvx2_backbone.benchmark.run import Case, make_step, peak_memory_mib
from cvx2_backbone.models import convnext as convnext_module
from cvx2_backbone.models.convnext import CP_GRANULARITIES, DEFAULT_CP_GRANULARITY

SMALL = dict(depths=[1, 2, 3, 1], dims=[16, 24, 32, 40])


def _step(model, x, seed=5, input_grad=True):
    """Outputs, input gradient and parameter gradients of one training step on a fixed loss."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(input_grad)
    torch.manual_seed(seed)  # the same drop-path masks in every model
    with ops.record_kernels() as kernels:
        outputs = model(x)
        sum((o * o.detach().sin()).sum() for o in outputs).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return [o.detach() for o in outputs], x.grad, grads, dict(kernels)


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Count the calls of torch.utils.checkpoint.checkpoint made by the backbone."""
    calls = []
    original = convnext_module.cp.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(type(function).__name__)
        return original(function, *args, **kwargs)

    monkeypatch.setattr(convnext_module.cp, "checkpoint", counting)
    return calls


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("with_cp", [True, "block", "stage"])
def test_checkpointed_step_equals_plain_step(cls, with_cp, checkpoint_calls):
    plain = randomize_(cls(SMALL, drop_path_rate=0.3), 0).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.with_cp = with_cp
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    expected = _step(plain, x)
    assert checkpoint_calls == []
    actual = _step(checkpointed, x)
    granularity = DEFAULT_CP_GRANULARITY if with_cp is True else with_cp
    blocks = sum(SMALL["depths"])
    if granularity == "stage":
        assert checkpoint_calls == ["Sequential"] * len(SMALL["depths"])
    else:
        assert checkpoint_calls == ["Block"] * blocks
    # every block ran twice: once in the forward, once recomputed in the backward
    assert sum(actual[3].values()) == 2 * blocks and sum(expected[3].values()) == blocks
    for a, e in zip(actual[0], expected[0]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    torch.testing.assert_close(actual[1], expected[1], rtol=0, atol=0)
    assert actual[2].keys() == expected[2].keys()
    for name, grad in actual[2].items():
        assert grad is not None, name
        torch.testing.assert_close(grad, expected[2][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("with_cp", ["block", "stage"])
def test_checkpointing_respects_frozen_stages(with_cp, checkpoint_calls):
    plain = randomize_(ConvNeXtV2(SMALL, frozen_stages=2, drop_path_rate=0.2), 0).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.with_cp = with_cp
    checkpointed.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    # images need no gradient (as in a detector), so the frozen stages have nothing to differentiate
    expected, actual = _step(plain, x, input_grad=False), _step(checkpointed, x, input_grad=False)
    for i in range(2):  # frozen: eval mode, no gradients, and no checkpoint (nothing to recompute)
        assert not checkpointed.stages[i].training and not checkpointed.downsample_layers[i].training
        assert all(p.grad is None for p in checkpointed.stages[i].parameters())
    assert checkpoint_calls == (["Sequential"] * 2 if with_cp == "stage" else ["Block"] * sum(SMALL["depths"][2:]))
    for name, grad in actual[2].items():
        if expected[2][name] is None:
            assert grad is None, name
        else:
            torch.testing.assert_close(grad, expected[2][name], rtol=0, atol=0, msg=name)
    for a, e in zip(actual[0], expected[0]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_no_checkpointing_in_eval_or_without_grad(checkpoint_calls):
    model = ConvNeXtV2(SMALL, with_cp="stage")
    x = torch.randn(1, 3, 64, 64)
    model.eval()(x)
    with torch.no_grad():
        model.train()(x)
    assert checkpoint_calls == []


def test_with_cp_values():
    assert ConvNeXtV2(SMALL).cp_granularity is None
    assert ConvNeXtV2(SMALL, with_cp=False).cp_granularity is None
    assert ConvNeXtV2(SMALL, with_cp=True).cp_granularity == DEFAULT_CP_GRANULARITY in CP_GRANULARITIES
    model = ConvNeXtV2(SMALL, with_cp="stage")
    assert model.with_cp == "stage" and model.cp_granularity == "stage"
    model.with_cp = True  # what the benchmark and mmengine hooks assign
    assert model.with_cp is True and model.cp_granularity == DEFAULT_CP_GRANULARITY
    assert ConvNeXtV2(SMALL, with_cp=None).with_cp is False
    for bad in ("layer", "Stage", 1, "true"):
        with pytest.raises(ValueError, match="with_cp must be"):
            ConvNeXtV2(SMALL, with_cp=bad)


def test_both_granularities_save_training_memory():
    """Peak memory of a training step at 1x192: per block < per stage < none (per stage holds one stage's
    activations while it recomputes it, per block one block's)."""
    model = randomize_(ConvNeXtV2("atto", out_norm=False), 0)
    x = torch.randn(1, 3, 192, 192, generator=torch.Generator().manual_seed(3))
    peaks = {}
    for name in ("train-fp32", "train-fp32-cp-block", "train-fp32-cp-stage"):
        step = make_step("cvx2", model, Case.parse(name), x)
        step()  # first-call allocations do not count
        peaks[name] = peak_memory_mib(step, torch.device("cpu"))
    assert peaks["train-fp32-cp-block"] < peaks["train-fp32-cp-stage"] < 0.9 * peaks["train-fp32"], peaks
