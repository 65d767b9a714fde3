"""The masked dense encoder against a brute-force sparse reference (the official FCMAE encoder's semantics).

The reference keeps a list of visible sites per stage, as MinkowskiEngine does, and computes each
layer site by site: a submanifold 7x7 depthwise conv that sums only visible neighbours, LayerNorm
and MLP per site, GRN over each image's visible sites (or the whole batch's, as MinkowskiGRN),
and 2x2 stride-2 downsampling over the visible sites of each window. It runs in float64; the
dense implementations run in float32 and must agree within 1e-5 of the output scale.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cvx2_backbone import ConvNeXt, ConvNeXtV2
from cvx2_backbone.benchmark.models import randomize_
from cvx2_backbone.fcmae import masked_forward, upsample_mask


class Sparse:
    """Visible sites (b, y, x) of an (N, H, W) grid and their features (M, C)."""

    def __init__(self, coords: torch.Tensor, feats: torch.Tensor, shape: tuple[int, int, int]):
        self.coords, self.feats, self.shape = coords, feats, shape

    def lookup(self) -> torch.Tensor:
        grid = torch.full(self.shape, -1, dtype=torch.long)
        grid[self.coords[:, 0], self.coords[:, 1], self.coords[:, 2]] = torch.arange(len(self.coords))
        return grid

    def with_feats(self, feats: torch.Tensor) -> "Sparse":
        return Sparse(self.coords, feats, self.shape)

    def dense(self) -> torch.Tensor:
        n, h, w = self.shape
        out = torch.zeros(n, h, w, self.feats.shape[1], dtype=self.feats.dtype)
        out[self.coords[:, 0], self.coords[:, 1], self.coords[:, 2]] = self.feats
        return out.permute(0, 3, 1, 2)


def submanifold_depthwise(x: Sparse, conv: torch.nn.Conv2d) -> Sparse:
    """Output at every input site: bias + sum over visible neighbours in the k x k window."""
    k = conv.kernel_size[0]
    r = k // 2
    grid = x.lookup()
    n, h, w = x.shape
    b, y, xx = x.coords.unbind(1)
    out = conv.bias.expand(len(x.coords), -1).clone()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ny, nx = y + dy, xx + dx
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            neighbour = torch.full_like(b, -1)
            neighbour[inside] = grid[b[inside], ny[inside], nx[inside]]
            valid = neighbour >= 0
            out[valid] += x.feats[neighbour[valid]] * conv.weight[:, 0, dy + r, dx + r]
    return x.with_feats(out)


def sparse_downsample(x: Sparse, norm: torch.nn.Module, conv: torch.nn.Conv2d) -> Sparse:
    """LayerNorm per site, then a 2x2 stride-2 conv whose outputs are the windows holding visible sites."""
    feats = F.layer_norm(x.feats, (x.feats.shape[1],), norm.weight, norm.bias, norm.eps)
    b, y, xx = x.coords.unbind(1)
    out_coords = torch.stack([b, y // 2, xx // 2], dim=1)
    unique, slot = torch.unique(out_coords, dim=0, return_inverse=True)
    out = conv.bias.expand(len(unique), -1).clone()
    for i in range(len(x.coords)):
        out[slot[i]] += conv.weight[:, :, y[i] % 2, xx[i] % 2] @ feats[i]
    n, h, w = x.shape
    return Sparse(unique, out, (n, h // 2, w // 2))


def sparse_grn(rows: torch.Tensor, images: torch.Tensor, grn: torch.nn.Module, batch_wide: bool) -> torch.Tensor:
    gamma, beta = grn.gamma.reshape(-1), grn.beta.reshape(-1)
    out = torch.empty_like(rows)
    groups = [torch.ones_like(images, dtype=torch.bool)] if batch_wide else [images == i for i in images.unique()]
    for group in groups:
        gx = rows[group].norm(dim=0)
        nx = gx / (gx.mean() + grn.eps)
        out[group] = gamma * (rows[group] * nx) + beta + rows[group]
    return out


def sparse_block(x: Sparse, block: torch.nn.Module, batch_wide: bool) -> Sparse:
    y = submanifold_depthwise(x, block.dwconv).feats
    y = F.layer_norm(y, (y.shape[1],), block.norm.weight, block.norm.bias, block.norm.eps)
    y = F.gelu(F.linear(y, block.pwconv1.weight, block.pwconv1.bias))
    if block.grn is not None:
        y = sparse_grn(y, x.coords[:, 0], block.grn, batch_wide)
    y = F.linear(y, block.pwconv2.weight, block.pwconv2.bias)
    if block.gamma is not None:
        y = block.gamma * y
    return x.with_feats(x.feats + y)


def reference_encoder(backbone, images: torch.Tensor, mask: torch.Tensor, batch_wide: bool) -> list[torch.Tensor]:
    """Dense stem, then visible sites only, stage by stage; each stage densified with zeros at the end."""
    stem = backbone.downsample_layers[0](images)
    visible = upsample_mask(~mask, 2 ** (backbone.num_stages - 1))
    coords = visible.nonzero()
    x = Sparse(coords, stem[coords[:, 0], :, coords[:, 1], coords[:, 2]], tuple(visible.shape))
    outputs = []
    for i in range(backbone.num_stages):
        if i > 0:
            x = sparse_downsample(x, *backbone.downsample_layers[i])
        for block in backbone.stages[i]:
            x = sparse_block(x, block, batch_wide)
        outputs.append(x.dense())
    return outputs


def _random_mask(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Hidden patches at a different ratio per image (0.3 .. 0.8), at least one visible patch each."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, h, w, generator=generator) < torch.linspace(0.3, 0.8, n)[:, None, None]
    mask[:, 0, 0] = False if h * w == 1 else mask[:, 0, 0]
    mask.view(n, -1)[mask.view(n, -1).all(dim=1), 0] = False
    return mask


def _backbone(cls=ConvNeXtV2, **kwargs):
    model = cls(out_norm=False, **kwargs)
    return randomize_(model, seed=0).eval()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    error = (actual.double() - expected).abs().max().item()
    assert error <= 1e-5 * max(scale, 1.0), f"max error {error:.3g} at output scale {scale:.3g}"


CASES = [
    # arch, image size (H, W): 4 stages (32-px patches) on square, odd and single-patch grids; 2 stages (8-px)
    (dict(depths=[1, 2, 1, 1], dims=[8, 16, 24, 32]), (96, 160)),
    (dict(depths=[1, 1, 2, 1], dims=[8, 12, 16, 24]), (224, 224)),
    (dict(depths=[1, 1, 1, 1], dims=[8, 8, 8, 8]), (32, 64)),
    (dict(depths=[2, 1], dims=[8, 16]), (40, 56)),
]


@pytest.mark.parametrize("grn_stats", ["image", "batch"])
@pytest.mark.parametrize("arch,size", CASES)
def test_masked_encoder_equals_the_sparse_reference(arch, size, grn_stats):
    backbone = _backbone(arch=arch)
    patch = backbone.min_input_size
    images = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    mask = _random_mask(3, size[0] // patch, size[1] // patch, seed=sum(size))
    with torch.no_grad():
        expected = reference_encoder(copy.deepcopy(backbone).double(), images.double(), mask, grn_stats == "batch")
        for impl in ("dense", "gather"):
            outputs = masked_forward(backbone, images, mask, grn_stats=grn_stats, impl=impl)
            assert len(outputs) == backbone.num_stages
            for output, reference in zip(outputs, expected):
                assert output.shape == reference.shape
                _assert_close(output, reference)
    if grn_stats == "image":  # the two options differ on this batch by far more than the tolerance
        batch_wide = reference_encoder(copy.deepcopy(backbone).double(), images.double(), mask, True)
        assert any((b - e).abs().max() > 1e-4 * e.abs().max() for b, e in zip(batch_wide, expected))


def test_layer_scale_blocks_and_the_thin_backbone_method():
    backbone = _backbone(ConvNeXt, arch=dict(depths=[1, 1, 1, 1], dims=[8, 16, 16, 16]), layer_scale_init_value=0.5)
    images = torch.randn(2, 3, 64, 96)
    mask = _random_mask(2, 2, 3, seed=5)
    with torch.no_grad():
        expected = reference_encoder(copy.deepcopy(backbone).double(), images.double(), mask, False)
        _assert_close(masked_forward(backbone, images, mask)[-1], expected[-1])


def test_nothing_hidden_is_the_plain_backbone():
    backbone = _backbone(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32]))
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        plain = backbone(images)
        masked = masked_forward(backbone, images, torch.zeros(2, 3, 4, dtype=torch.bool))
    for a, b in zip(masked, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gather_and_dense_agree_in_training_gradients_and_drop_path():
    backbone = _backbone(arch=dict(depths=[2, 1, 2, 1], dims=[8, 16, 24, 32]), drop_path_rate=0.5).train()
    images = torch.randn(4, 3, 96, 96)
    mask = _random_mask(4, 3, 3, seed=2)
    grads = {}
    for impl in ("dense", "gather"):
        backbone.zero_grad()
        torch.manual_seed(7)  # the same per-image drop-path draws for both
        out = masked_forward(backbone, images, mask, impl=impl)[-1]
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[impl] = {k: p.grad.clone() for k, p in backbone.named_parameters() if p.grad is not None}
        grads[impl]["out"] = out.detach()
    assert grads["dense"].keys() == grads["gather"].keys()
    for key, value in grads["dense"].items():
        torch.testing.assert_close(grads["gather"][key], value, atol=1e-5, rtol=1e-4, msg=key)
    torch.manual_seed(8)
    other = masked_forward(backbone, images, mask, impl="gather")[-1].detach()
    assert not torch.allclose(other, grads["gather"]["out"])  # drop path is live: other draws, other output


def test_masked_input_errors():
    backbone = _backbone(arch=dict(depths=[1, 1, 1, 1], dims=[8, 8, 8, 8]))
    with pytest.raises(ValueError, match="multiples of the 32-pixel patch"):
        masked_forward(backbone, torch.randn(1, 3, 48, 64), torch.zeros(1, 1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be \(N, H/32, W/32\) = \(1, 2, 2\)"):
        masked_forward(backbone, torch.randn(1, 3, 64, 64), torch.zeros(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one visible patch"):
        masked_forward(backbone, torch.randn(1, 3, 64, 64), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="grn_stats"):
        masked_forward(backbone, torch.randn(1, 3, 64, 64), torch.zeros(1, 2, 2, dtype=torch.bool), grn_stats="x")


def test_padding_hidden_as_patches_leaves_the_features_unchanged():
    from cvx2_backbone.benchmark.fcmae_padding import padding_change

    backbone = _backbone(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32]))
    image = torch.randn(1, 3, 64, 96)
    masked = padding_change(backbone, image, 192, "masked", border=0)
    assert max(masked) < 1e-5, masked  # everywhere, the padded edge included
    plain = padding_change(backbone, image, 192, "plain", border=32)
    assert max(plain) > 1e-3, plain  # GRN pools over the padding


def test_grn_gradients_stay_finite_where_a_channel_is_zero_on_every_visible_site():
    from cvx2_backbone.fcmae.encoder import Sites, grn_dense, grn_rows

    backbone = _backbone(arch=dict(depths=[1, 1, 1, 1], dims=[8, 8, 8, 8]))
    grn = backbone.stages[0][0].grn
    x = torch.randn(2, 4, 4, 32)
    x[0, ..., 5] = 0  # e.g. GELU outputs that underflow to 0 everywhere
    visible = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    visible[:, 0, 0] = True
    sites = Sites.of(visible, x.dtype)
    grads = []
    for run in ("rows", "dense"):
        leaf = x.clone().requires_grad_()
        if run == "rows":
            out = grn_rows(grn, leaf.reshape(-1, 32).index_select(0, sites.index), sites, 2, "image")
        else:
            out = grn_dense(grn, leaf, sites.keep.permute(0, 2, 3, 1), "image").reshape(-1, 32)[sites.index]
        out.sum().backward()
        grads.append(leaf.grad)
    assert torch.isfinite(grads[0]).all()
    torch.testing.assert_close(grads[0], grads[1])
