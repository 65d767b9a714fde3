"""Helpers shared by the weights tests (tiny models, random weights, output comparison, a hub over local files)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from cvx2_backbone import ConvNeXt, ConvNeXtV2
from cvx2_backbone.weights import HubUnavailableError

SMALL_ARCH = dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64])
TOLERANCE = 1e-5  # max abs difference relative to the output scale, fp32


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm, bias, GRN and layer-scale parameter random values, so that each one matters.

    Works on this project's, timm's and Hugging Face's ConvNeXts alike (it goes by parameter names).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "grn" in name or name.endswith(("gamma", "layer_scale_parameter")):
                param.copy_(0.5 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            elif param.dim() == 1:  # LayerNorm weights
                param.copy_(1 + 0.2 * noise)
            else:
                param.copy_(noise * param.std().clamp_min(0.02))
    return model.eval()


def small_backbone(v2: bool = True, seed: int = 0, **kwargs) -> ConvNeXt:
    """A randomised backbone with SMALL_ARCH (fast to build); no output norms unless asked for."""
    kwargs.setdefault("out_norm", False)
    cls = ConvNeXtV2 if v2 else ConvNeXt
    return randomise(cls(arch=dict(SMALL_ARCH), **kwargs), seed)


def fresh_like(model: ConvNeXt, **kwargs) -> ConvNeXt:
    """An untrained backbone of the same class and architecture; no output norms unless asked for."""
    kwargs.setdefault("out_norm", False)
    arch = dict(depths=list(model.depths), dims=list(model.dims))
    return type(model)(arch=arch, use_grn=model.use_grn, layer_scale_init_value=model.layer_scale_init_value, **kwargs)


def image(seed: int = 0, size: tuple[int, int] = (64, 96)) -> Tensor:
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def relative_error(expected: Sequence[Tensor], actual: Sequence[Tensor]) -> float:
    """Largest max-abs difference over the outputs, each relative to its reference's max magnitude."""
    assert len(expected) == len(actual), f"{len(expected)} reference outputs vs {len(actual)}"
    worst = 0.0
    for ref, out in zip(expected, actual):
        assert ref.shape == out.shape, f"shape {tuple(out.shape)} vs reference {tuple(ref.shape)}"
        worst = max(worst, ((ref - out).abs().max() / ref.abs().max()).item())
    return worst


@torch.no_grad()
def outputs(model: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
    return tuple(model.eval()(x))


def assert_same_outputs(reference: nn.Module | Sequence[Tensor], model: nn.Module, x: Tensor) -> None:
    expected = outputs(reference, x) if isinstance(reference, nn.Module) else tuple(reference)
    error = relative_error(expected, outputs(model, x))
    assert error <= TOLERANCE, f"outputs differ: relative max abs error {error:.2e} > {TOLERANCE}"


def official_layout(model: ConvNeXt, num_classes: int = 5) -> dict[str, torch.Tensor]:
    """The model's weights as the official code stores them: (1, 1, 1, C) GRN, a classifier ``norm``/``head``."""
    state = {k: (v.reshape(1, 1, 1, -1) if ".grn." in k else v).clone() for k, v in model.state_dict().items()}
    width = model.dims[-1]
    state.update({"norm.weight": torch.ones(width), "norm.bias": torch.zeros(width),
                  "head.weight": torch.randn(num_classes, width), "head.bias": torch.zeros(num_classes)})
    return state


class FakeHub:
    """A downloader over local files: {(repo id, file name): path} and {url: path}; records every request."""

    def __init__(self, files: dict[tuple[str, str], Path] | None = None, urls: dict[str, Path] | None = None,
                 unreachable: bool = False):
        self.files, self.urls, self.unreachable = files or {}, urls or {}, unreachable
        self.requests: list[tuple[str, ...]] = []

    def hf_file(self, repo_id, filename, revision=None):
        self.requests.append((repo_id, filename, revision))
        if self.unreachable:
            raise HubUnavailableError(f"cannot fetch {filename}: no network; pass a local path")
        if (repo_id, filename) not in self.files:
            raise FileNotFoundError(filename)
        return self.files[repo_id, filename]

    def url(self, url):
        self.requests.append((url,))
        return self.urls[url]
