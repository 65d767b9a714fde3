"""DINOv3 / EUPE ConvNeXt weights made here (the layouts their repositories save) and the dense features DINOv3
documents, shared by the weights and config tests."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

from cvx2_backbone import ConvNeXt
from tests.helpers.weights import randomise

EPS = 1e-6  # DINOv3's LayerNorm eps


def dinov3_state(size: str, seed: int) -> dict[str, torch.Tensor]:
    """Random weights as the DINOv3 repository saves its ConvNeXt: official V1 keys, ``norm`` and ``norms.3`` (the
    same module, so the same tensors); ``norms.0..2`` are identities and hold nothing."""
    model = randomise(ConvNeXt(arch=size, out_norm=False), seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 1)
    width = model.dims[-1]
    state["norm.weight"] = 1 + 0.2 * torch.randn(width, generator=generator)
    state["norm.bias"] = 0.1 * torch.randn(width, generator=generator)
    state["norms.3.weight"], state["norms.3.bias"] = state["norm.weight"], state["norm.bias"]
    return state


def eupe_state(size: str, seed: int) -> dict[str, torch.Tensor]:
    """The DINOv3 layout plus EUPE's distillation projectors (two heads to teachers of other widths)."""
    state = dinov3_state(size, seed)
    width = state["norm.weight"].shape[0]
    for index, teacher in enumerate((1024, 1280)):
        state[f"projectors.{index}.weight"] = torch.randn(teacher, width)
        state[f"projectors.{index}.bias"] = torch.zeros(teacher)
    return state


def timm_reader(path, size: str) -> torch.nn.Module:
    """timm's convnext_<size> with the file at ``path`` loaded by timm itself (its filter reads DINOv3/EUPE files)."""
    return timm.create_model(f"convnext_{size}", pretrained=True, features_only=True,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=0)).eval()


def dinov3_dense(raw: tuple[torch.Tensor, ...], weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``get_intermediate_layers(x, n=4, reshape=True, norm=True)`` of the DINOv3 repository: ``norms[0..2]``
    identities, ``norms[3]`` the final LayerNorm over the channels of stage 4's output."""
    last = F.layer_norm(raw[-1].permute(0, 2, 3, 1), (raw[-1].shape[1],), weight, bias, EPS).permute(0, 3, 1, 2)
    return (*raw[:-1], last)
