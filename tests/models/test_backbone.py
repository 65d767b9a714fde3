"""The backbone itself: presets, shapes, selection, errors, freezing, checkpointing, sizes."""
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from cvx2_backbone import V1_ARCHS, V2_ARCHS, ConvNeXt, ConvNeXtV2

TINY = dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64])

# The ConvNeXt V2 paper's classification models at 224x224: (params in M, GFLOPs).
PAPER_V2 = {
    "atto": (3.7, 0.55), "femto": (5.2, 0.78), "pico": (9.1, 1.37), "nano": (15.6, 2.45),
    "tiny": (28.6, 4.47), "base": (89.0, 15.4), "large": (198.0, 34.4), "huge": (660.0, 115.0),
}


def randomise(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Give GRN, layer scale and norms non-trivial values so that they matter in comparisons."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn(param.shape, generator=gen) * std)
    return model


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("cls,arch", [(ConvNeXtV2, a) for a in V2_ARCHS] + [(ConvNeXt, a) for a in V1_ARCHS])
def test_every_preset_shapes_and_strides(cls, arch):
    depths, dims = cls.arch_zoo[arch]
    with torch.device("meta"):
        model = cls(arch)
        outs = model(torch.empty(2, 3, 256, 320))
    assert model.depths == list(depths) and model.dims == list(dims)
    assert model.out_channels == list(dims)
    assert model.out_strides == [4, 8, 16, 32]
    assert model.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert model.out_indices == [0, 1, 2, 3]
    for out, channels, stride in zip(outs, model.out_channels, model.out_strides):
        assert tuple(out.shape) == (2, channels, 256 // stride, 320 // stride)


def test_v1_and_v2_defaults():
    v2, v1 = ConvNeXtV2("atto"), ConvNeXt("atto")
    assert v2.stages[0][0].grn is not None and v2.stages[0][0].gamma is None
    assert v1.stages[0][0].grn is None
    assert torch.allclose(v1.stages[0][0].gamma, torch.full((40,), 1e-6))
    # GRN starts as the identity (gamma = beta = 0), as in the official code.
    assert not v2.stages[0][0].grn.gamma.any() and not v2.stages[0][0].grn.beta.any()


@pytest.mark.parametrize("size", [(250, 330), (32, 32), (33, 47), (97, 65)])
def test_odd_input_sizes(size):
    model = ConvNeXtV2("atto").eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    h, w = size
    expected = []
    h, w = h // 4, w // 4
    for _ in range(4):
        expected.append((h, w))
        h, w = h // 2, w // 2
    assert [tuple(o.shape[-2:]) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_outputs_are_layer_normed_unless_disabled():
    model = randomise(ConvNeXtV2(TINY)).eval()
    assert all(hasattr(model, f"norm{i}") for i in range(4))
    raw_model = ConvNeXtV2(TINY, out_norm=False).eval()
    missing, unexpected = raw_model.load_state_dict(model.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == sorted(f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        normed, raw = model(x), raw_model(x)
    assert len(normed) == len(raw) == 4
    # Each output is its stage's raw output through that stage's own LayerNorm, and nothing else.
    for index, (out, plain) in enumerate(zip(normed, raw)):
        expected = getattr(model, f"norm{index}")(plain)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out, plain, atol=1e-2)


# --- output selection ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,names", [
    (dict(), ["stage1", "stage2", "stage3", "stage4"]),
    (dict(out_indices=(1, 3)), ["stage2", "stage4"]),
    (dict(out_indices=[-1]), ["stage4"]),
    (dict(out_indices=3), ["stage4"]),
    (dict(out_indices=(0, -2)), ["stage1", "stage3"]),
    (dict(out_features=["stem", "stage2"]), ["stem", "stage2"]),
    (dict(out_features="stage3"), ["stage3"]),
    (dict(out_features=["stage1", "stage4"], out_indices=[0, 3]), ["stage1", "stage4"]),
    (dict(out_features=["stage1", "stage4"], out_indices=[0, -1]), ["stage1", "stage4"]),
])
def test_selection(kwargs, names):
    model = ConvNeXtV2(TINY, **kwargs).eval()
    assert model.out_features == names
    strides = {"stem": 4, "stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}
    channels = {"stem": 8, "stage1": 8, "stage2": 16, "stage3": 32, "stage4": 64}
    assert model.out_strides == [strides[n] for n in names]
    assert model.out_channels == [channels[n] for n in names]
    assert model.out_indices == [None if n == "stem" else int(n[-1]) - 1 for n in names]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == model.out_channels
    assert [64 // o.shape[2] for o in outs] == model.out_strides


def test_stem_output_is_the_stem():
    model = randomise(ConvNeXtV2(TINY, out_features=["stem", "stage1"], out_norm=False)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stem, stage1 = model(x)
        # The backbone runs channels-last inside; an NCHW stem convolution rounds differently (1e-6).
        expected_stem = model.downsample_layers[0](x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(stem, expected_stem)
    assert torch.allclose(stage1, model.stages[0](expected_stem), atol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(out_features=["stage5"]), r"unknown name\(s\) \['stage5'\]"),
    (dict(out_features=["stage1", "stage1"]), "duplicates"),
    (dict(out_features=["stage3", "stage1"]), "network order"),
    (dict(out_features=[]), "empty"),
    (dict(out_indices=[4]), "out of range"),
    (dict(out_indices=[-5]), "out of range"),
    (dict(out_indices=[0, 0]), r"\[0, 0\]: 0 and 0 both select stage1"),
    (dict(out_indices=[3, 1]), "network order"),
    (dict(out_indices=[0, -4]), r"\[0, -4\]: 0 and -4 both select stage1 \(negative indices count from the end"),
    (dict(out_indices=(3, -1)), r"\[3, -1\]: 3 and -1 both select stage4"),
    (dict(out_indices=["1"]), "must contain ints"),
    (dict(out_indices=[0, 1], out_features=["stage1", "stage3"]), "do not name the same"),
    (dict(out_indices=[0], out_features=["stem"]), "do not name the same"),
])
def test_invalid_selection(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvNeXtV2(TINY, **kwargs)


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,message", [
    ((3, 64, 64), "4-D"),
    ((1, 1, 3, 64, 64), "4-D"),
    ((1, 1, 64, 64), "1 channels but .* in_channels=3"),
    ((1, 3, 31, 64), "smaller than the network's total stride 32"),
    ((1, 3, 64, 16), "smaller than the network's total stride 32"),
])
def test_bad_input(shape, message):
    model = ConvNeXtV2(TINY)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape))


def test_non_tensor_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        ConvNeXtV2(TINY)([[1.0]])


@pytest.mark.parametrize("dtype,message", [
    (torch.uint8, r"expects normalised floating-point pixels, got a torch.uint8 tensor.*FeatureExtractor"),
    (torch.float64, r"input is torch.float64 but the backbone's weights are torch.float32.*x.to\(torch.float32\)"),
])
def test_input_dtype_errors_name_the_fix(dtype, message):
    with pytest.raises(TypeError, match=message):
        ConvNeXtV2(TINY)(torch.zeros(1, 3, 64, 64, dtype=dtype))
    model = ConvNeXtV2(TINY).to(torch.float64).eval()  # a float64 model takes float64 input
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64))[0].dtype == torch.float64


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
@pytest.mark.parametrize("mode", ["train", "eval", "inference"])
def test_empty_batch_gives_empty_maps(cls, mode):
    """As timm's models do: N=0 in, N=0 maps of the right channels and sizes out (and a backward pass in training)."""
    model = cls(arch="atto").train(mode == "train")
    x = torch.randn(0, 3, 64, 96)
    with torch.inference_mode(mode == "inference"):
        outputs = model(x)
    assert [tuple(o.shape) for o in outputs] == [(0, c, 64 // s, 96 // s)
                                                 for c, s in zip(model.out_channels, model.out_strides)]
    if mode == "train":
        sum(o.sum() for o in outputs).backward()
        assert all(p.grad is not None and not p.grad.any() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch,message", [
    ("gigantic", "unknown ConvNeXtV2 arch 'gigantic'; choose one of"),
    ("small", "unknown ConvNeXtV2 arch 'small'"),  # V1 only
    (dict(depths=[1, 1]), "missing \\['dims'\\]"),
    (dict(depths=[1, 1], dims=[8], width=2), "unexpected \\['width'\\]"),
    (dict(depths=[1, 1], dims=[8]), "equal length"),
    (dict(depths=[1, 0], dims=[8, 16]), "positive ints"),
    (dict(depths=[], dims=[]), "non-empty"),
    (dict(depths=[1, 1], dims="96"), "dims must be a list of positive ints .*got '96'"),
    (dict(depths=3, dims=[8]), "depths must be a list of positive ints .*got 3"),
    (3, "preset name or dict"),
])
def test_bad_arch(arch, message):
    with pytest.raises(ValueError, match=message):
        ConvNeXtV2(arch)


@pytest.mark.parametrize("kwargs,message", [
    (dict(hidden_act="no_such_act"), "unknown hidden_act"),
    (dict(frozen_stages=5), "frozen_stages"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(in_channels=0), "in_channels"),
    (dict(patch_size=0), "patch_size must be a positive int, got 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvNeXtV2(TINY, **kwargs)


# --- custom architectures ------------------------------------------------------------------
@pytest.mark.parametrize("depths,dims", [([1, 1, 1], [8, 16, 32]), ([1, 1, 1, 1, 1], [8, 16, 32, 64, 128])])
def test_any_number_of_stages(depths, dims):
    model = ConvNeXtV2(dict(depths=depths, dims=dims)).eval()
    n = len(depths)
    assert model.out_features == [f"stage{i + 1}" for i in range(n)]
    assert model.out_strides == [4 * 2 ** i for i in range(n)]
    size = model.min_input_size
    assert size == 4 * 2 ** (n - 1)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, size, size + 5))
    assert [o.shape[1] for o in outs] == dims
    assert outs[-1].shape[-2:] == (1, 1)
    assert ConvNeXtV2(dict(depths=depths, dims=dims), out_features=[f"stage{n}"]).out_indices == [n - 1]


def test_patch_size_and_activation():
    model = ConvNeXtV2(TINY, patch_size=2, hidden_act="relu", in_channels=1).eval()
    assert model.out_strides == [2, 4, 8, 16]
    assert isinstance(model.stages[0][0].act, torch.nn.ReLU)
    assert model.downsample_layers[0][0].kernel_size == (2, 2)
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 32, 48))
    assert outs[0].shape[-2:] == (16, 24)
    tanh_gelu = ConvNeXtV2(TINY, hidden_act="gelu_pytorch_tanh").stages[0][0].act
    z = torch.linspace(-4, 4, 101)
    assert torch.allclose(tanh_gelu(z), torch.nn.functional.gelu(z, approximate="tanh"))


# --- parameter names, init ------------------------------------------------------------------
def test_official_parameter_names():
    names = set(dict(ConvNeXtV2(TINY).named_parameters()))
    for name in ["downsample_layers.0.0.weight", "downsample_layers.0.1.weight", "downsample_layers.1.0.bias",
                 "downsample_layers.1.1.weight", "stages.2.1.dwconv.weight", "stages.2.1.norm.weight",
                 "stages.2.1.pwconv1.weight", "stages.2.1.grn.gamma", "stages.2.1.grn.beta",
                 "stages.2.1.pwconv2.bias", "norm3.weight"]:
        assert name in names, name
    assert "stages.0.0.gamma" in dict(ConvNeXt(TINY).named_parameters())


def test_grn_loads_official_4d_shape():
    model = ConvNeXtV2(TINY)
    state = model.state_dict()
    state = {k: (v.reshape(1, 1, 1, -1) + 1 if ".grn." in k else v) for k, v in state.items()}
    model.load_state_dict(state)
    assert torch.equal(model.stages[0][0].grn.gamma, torch.ones(32))


def test_truncated_normal_init():
    torch.manual_seed(0)
    model = ConvNeXtV2("atto")
    weight = model.stages[2][0].pwconv1.weight
    assert abs(weight.std().item() - 0.02) < 0.002
    assert abs(weight.mean().item()) < 0.001
    # The official code truncates at +-2 (absolute, timm's default), far beyond std 0.02: the tails stay
    # those of a normal distribution (4.55% beyond 2 std, 0.27% beyond 3), not cut at 2 std as trunc_normal_(a=-2 std).
    beyond = [(weight.abs() > k * 0.02).float().mean().item() for k in (2, 3)]
    assert 0.040 < beyond[0] < 0.051 and 0.0015 < beyond[1] < 0.0040, beyond
    assert not model.stages[2][0].pwconv1.bias.any()


# --- training behaviour ----------------------------------------------------------------------
@pytest.mark.parametrize("frozen", [1, 2, 4])
def test_frozen_stages(frozen):
    model = ConvNeXtV2(TINY, frozen_stages=frozen, drop_path_rate=0.2)
    model.train()
    for i in range(4):
        stage_params = list(model.stages[i].parameters()) + list(model.downsample_layers[i].parameters())
        assert all(p.requires_grad == (i >= frozen) for p in stage_params)
        assert model.stages[i].training == (i >= frozen)
        assert model.downsample_layers[i].training == (i >= frozen)
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is None for p in model.stages[0].parameters())
    assert model.norm3.weight.grad is not None


def test_nothing_frozen_by_default():
    model = ConvNeXtV2(TINY, frozen_stages=-1).train()
    assert all(p.requires_grad for p in model.parameters()) and model.stages[0].training


@pytest.mark.parametrize("cls", [ConvNeXtV2, ConvNeXt])
def test_with_cp_same_outputs_and_gradients(cls):
    torch.manual_seed(0)
    plain = randomise(cls(TINY, drop_path_rate=0.3)).train()
    ckpt = cls(TINY, drop_path_rate=0.3, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same drop-path masks
        xi = x.clone().requires_grad_()
        outs = model(xi)
        sum((o * o).sum() for o in outs).backward()
        results.append((outs, xi.grad, {n: p.grad for n, p in model.named_parameters()}))
    (outs_a, gx_a, g_a), (outs_b, gx_b, g_b) = results
    for a, b in zip(outs_a, outs_b):
        assert torch.equal(a, b)
    assert torch.allclose(gx_a, gx_b, rtol=1e-5, atol=1e-7)
    for name in g_a:
        assert torch.allclose(g_a[name], g_b[name], rtol=1e-5, atol=1e-7), name


def test_drop_path_inactive_in_eval_and_active_in_train():
    dropping = randomise(ConvNeXtV2(TINY, drop_path_rate=0.5))
    plain = ConvNeXtV2(TINY, drop_path_rate=0.0)
    plain.load_state_dict(dropping.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dropping.eval(), plain.eval()
        for a, b in zip(dropping(x), plain(x)):
            assert torch.equal(a, b)
        dropping.train()
        torch.manual_seed(0)
        trained = dropping(x)
    assert any(not torch.allclose(a, b) for a, b in zip(trained, plain(x)))
    rates = [blk.drop_path.drop_prob for stage in dropping.stages for blk in stage
             if not isinstance(blk.drop_path, torch.nn.Identity)]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.5)


# --- sizes against the paper and timm ----------------------------------------------------------
def _with_classifier_head(model: ConvNeXt, num_classes: int = 1000):
    """The paper's classification model: backbone + global pool + LayerNorm + Linear."""
    dim = model.dims[-1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, num_classes))
    return head, lambda x: head(model(x)[-1].mean((2, 3)))


@pytest.mark.parametrize("arch", list(PAPER_V2))
def test_paper_params_and_flops(arch):
    params_m, gflops = PAPER_V2[arch]
    with torch.device("meta"):
        model = ConvNeXtV2(arch, out_features=["stage4"], out_norm=False)
        head, classify = _with_classifier_head(model)
        with FlopCounterMode(display=False) as counter:
            classify(torch.empty(1, 3, 224, 224))
    total = (num_params(model) + num_params(head)) / 1e6
    macs = counter.get_total_flops() / 2 / 1e9  # the paper counts multiply-accumulates
    assert total == pytest.approx(params_m, rel=0.01)
    assert macs == pytest.approx(gflops, rel=0.03)


@pytest.mark.parametrize("cls,prefix,arch", [(ConvNeXtV2, "convnextv2", a) for a in V2_ARCHS]
                         + [(ConvNeXt, "convnext", a) for a in V1_ARCHS])
def test_params_equal_timm_without_head(cls, prefix, arch):
    with torch.device("meta"):
        ours = cls(arch, out_norm=False)
        theirs = timm.create_model(f"{prefix}_{arch}", pretrained=False)
    theirs_backbone = sum(p.numel() for n, p in theirs.named_parameters() if not n.startswith("head."))
    assert num_params(ours) == theirs_backbone


@pytest.mark.parametrize("out_norm", [True, False])
def test_outputs_are_plain_contiguous_nchw(out_norm):
    # mmcv's ops (RoIAlign in every Mask R-CNN head) read raw NCHW memory and ignore strides.
    model = ConvNeXtV2(TINY, out_norm=out_norm, out_features=["stem", "stage2", "stage4"]).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 96))
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.heavy
def test_huge_runs_and_matches_the_reference_path():
    """A real forward pass of the largest preset (2.6 GB of fp32 weights), fast path against reference."""
    model = randomise(ConvNeXtV2("huge", out_norm=False), std=0.02).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        fast = model(x)
        reference = model.set_reference_path(True)(x)
    for a, b in zip(fast, reference):
        assert torch.isfinite(a).all()
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_five_dimensional_input_is_told_to_fold_its_dimensions():
    from cvx2_backbone import ConvNeXtV2

    with pytest.raises(ValueError, match=r"fold the extra leading dimensions into the batch, e.g. x.flatten\(0, -4\)"):
        ConvNeXtV2(arch="atto")(torch.randn(2, 1, 3, 32, 32))
