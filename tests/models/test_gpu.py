"""The GPU lane (``pytest -m gpu``): the fused kernels on CUDA equal the plain ops; AMP training stays finite.

Skipped, with the reason, on machines without a CUDA GPU. Tolerances as in tests/models/test_fast_path.py:
fp32 (TF32 off) outputs 1e-5 of their scale and gradients 1e-4; under bf16 / fp16 autocast,
outputs 3e-2 (max-relative) and gradients by relative L2 error, 0.1 for bf16 and 0.03 for fp16.
"""
import copy

import pytest
import torch

from cvx2_backbone import ConvNeXt, ConvNeXtV2, ops
from cvx2_backbone.benchmark.models import randomize_

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
RTOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-2}
GRAD_RTOL = {torch.float32: 1e-4, torch.bfloat16: 0.1, torch.float16: 0.03}


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 means fp32: TF32 matmuls round to 10 bits, which the fp32 tolerance would not cover."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _pair(cls, arch="tiny", **kwargs):
    model = randomize_(cls(arch, out_norm=False, **kwargs), 0)
    if cls is ConvNeXt:
        with torch.no_grad():  # trained-like layer scales; the init value 1e-6 is covered on CPU
            for name, param in model.named_parameters():
                if name.endswith(".gamma") and param.dim() == 1 and "grn" not in name:
                    param.copy_(10 ** (-2 * torch.rand(param.shape)))
    return model.to(CUDA), copy.deepcopy(model).set_reference_path(True).to(CUDA)


def _run(model, x, upstream, dtype):
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    with ops.record_kernels() as kernels, torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        outputs = model(x)
    sum((o.float() * u).sum() for o, u in zip(outputs, upstream)).backward()
    grads = {"input": x.grad, **{n: p.grad for n, p in model.named_parameters() if p.grad is not None}}
    return [o.detach() for o in outputs], dict(kernels), grads


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("shape", [(1, 3, 800, 1216), (2, 3, 512, 512)], ids=["det-1x800x1216", "2x512"])
def test_cuda_fused_kernel_matches_plain_forward_and_backward(cls, dtype, shape):
    model, plain = _pair(cls)
    model.train(), plain.train()
    x = torch.randn(shape, device=CUDA).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        upstream = [torch.randn_like(o.float()) for o in plain(x)]
    outputs, kernels, grads = _run(model, x, upstream, dtype)
    expected, plain_kernels, expected_grads = _run(plain, x, upstream, dtype)
    blocks = sum(model.depths)
    assert kernels == {ops.FOLDED_AUTOGRAD: blocks} and plain_kernels == {ops.PLAIN: blocks}
    for a, e in zip(outputs, expected):
        assert a.dtype == e.dtype and a.is_contiguous() and torch.isfinite(a).all()
        assert ((a.double() - e.double()).abs().max() / e.double().abs().max()).item() <= RTOL[dtype]
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        error = ((grad.double() - expected_grads[name].double()).norm() / expected_grads[name].double().norm()).item()
        assert torch.isfinite(grad).all() and error <= GRAD_RTOL[dtype], (name, error)


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_fp16_grad_scaler_training_steps_stay_finite(cls):
    """A few fp16 AMP steps (GradScaler, AdamW) on a simple loss: finite losses, no skipped steps, finite weights."""
    torch.manual_seed(0)
    model = cls("atto", drop_path_rate=0.1).to(CUDA).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(2, 3, 256, 256, device=CUDA) * 3
    losses = []
    for _ in range(4):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = sum(o.float().pow(2).mean() for o in model(x))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert scaler.get_scale() >= 2.0**16  # started at 2^16: no step overflowed and halved it
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _mmcv_cuda_ops() -> bool:
    try:
        from mmcv.ops import nms
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]], device=CUDA)
        nms(boxes, torch.ones(1, device=CUDA), 0.5)
        return True
    except Exception:  # not installed, or built without CUDA
        return False


def test_mask_rcnn_v2_atto_amp_training_step(tmp_path):
    if not _mmcv_cuda_ops():
        pytest.skip("needs mmdet and mmcv built with CUDA ops")
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    path = tmp_path / "cfg.py"
    path.write_text("_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'\n"
                    "custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)\n"
                    "model = dict(backbone=dict(_delete_=True, type='cvx2_backbone.ConvNeXtV2', arch='atto',\n"
                    "                           drop_path_rate=0.1), neck=dict(in_channels=[40, 80, 160, 320]))\n")
    cfg = Config.fromfile(str(path))
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(CUDA).train()
    wrapper = build_optim_wrapper(model, dict(type="AmpOptimWrapper", dtype="float16",
                                              optimizer=dict(type="AdamW", lr=1e-4)))
    packed = demo_mm_inputs(2, [[3, 320, 320], [3, 256, 384]], num_items=[3, 2], num_classes=80, with_mask=True)
    with ops.record_kernels() as kernels:
        log_vars = model.train_step(packed, wrapper)
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    assert kernels[ops.FOLDED_AUTOGRAD] == sum(model.backbone.depths)
    assert all(torch.isfinite(p).all() for p in model.parameters())
