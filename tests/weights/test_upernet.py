"""Whole UperNet segmentors transformers -> mmseg -> transformers through `cvx2 convert`: the shipped mmseg config
loads the checkpoint strictly, and both give transformers' logits (decode and auxiliary heads, BatchNorm statistics
included) with the class names carried over."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import pytest
from transformers import ConvNextConfig, ConvNextV2Config, SwinConfig, UperNetConfig, UperNetForSemanticSegmentation

from cvx2_backbone.cli.main import main
from tests.helpers.weights import randomise, relative_error

ROOT = Path(__file__).resolve().parents[2]
V2_ATTO = ("configs/convnextv2/upernet_convnextv2-atto-fcmae_8xb2-160k_ade20k-512x512.py", ConvNextV2Config,
           [2, 2, 6, 2], [40, 80, 160, 320])
V1_TINY = ("configs/convnext/upernet_convnext-tiny-in1k_8xb2-160k_ade20k-512x512.py", ConvNextConfig,
           [3, 3, 9, 3], [96, 192, 384, 768])
V2_ATTO_RELU = (*V2_ATTO, "relu")
LABELS = ["wall", "sky", "tree", "road", "person"]
TOLERANCE = 1e-4


def small_upernet(case=V2_ATTO, seed: int = 0) -> UperNetForSemanticSegmentation:
    """A randomised transformers UperNet on a ConvNeXt with small heads and non-trivial BatchNorm statistics."""
    _, config_class, depths, dims, *activation = case
    backbone = config_class(depths=depths, hidden_sizes=dims, out_features=["stage1", "stage2", "stage3", "stage4"],
                            hidden_act=activation[0] if activation else "gelu")
    config = UperNetConfig(backbone_config=backbone, hidden_size=32, auxiliary_channels=16,
                           auxiliary_in_channels=dims[2],
                           num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                           label2id={name: i for i, name in enumerate(LABELS)})
    torch.manual_seed(seed)
    model = randomise(UperNetForSemanticSegmentation(config), seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.5 * torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator) * 2)
    return model.eval()


def build_mmseg(config: str, heads: dict):
    """A shipped UperNet config, heads resized as `cvx2 convert` says, BatchNorm instead of SyncBN (CPU)."""
    from cvx2_backbone.engine.config import read_config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import cvx2_backbone  # noqa: F401  (registers the backbone)

    cfg = read_config(ROOT / config)  # mmseg:: bases resolve on the forks too
    cfg.merge_from_dict(heads)
    cfg.model.backbone.init_cfg = None
    norm = dict(type="BN", requires_grad=True)
    cfg.model.decode_head.norm_cfg = norm
    cfg.model.auxiliary_head.norm_cfg = norm
    init_default_scope("mmseg")
    return MODELS.build(cfg.model).eval()


def _heads(hf_model, x):
    with torch.no_grad():
        features = hf_model.backbone(x).feature_maps
        return hf_model(x).logits, hf_model.auxiliary_head(features)


@pytest.mark.parametrize("case", [V2_ATTO, V1_TINY, V2_ATTO_RELU], ids=["v2-atto", "v1-tiny", "v2-atto-relu"])
def test_upernet_round_trip_transformers_mmseg_transformers(case, tmp_path, capsys):
    hf_model = small_upernet(case)
    hf_model.save_pretrained(tmp_path / "hf")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    logits, aux = _heads(hf_model, x)

    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "seg.pth")]) == 0
    printed = capsys.readouterr().out
    assert f"use it as:  python tools/test.py {case[0]} " in printed
    checkpoint = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert checkpoint["meta"]["dataset_meta"]["classes"] == LABELS
    options = printed.split("--cfg-options ", 1)[1].split()
    heads = {k: json.loads(v.lower()) if v in ("True", "False") else int(v) if v.isdigit() else v
             for k, v in (option.split("=", 1) for option in options)}
    expected = {"model.decode_head.channels": 32, "model.decode_head.num_classes": 5,
                "model.auxiliary_head.channels": 16, "model.auxiliary_head.num_classes": 5}
    if case is V2_ATTO_RELU:  # the shipped configs build GELU backbones
        expected["model.backbone.hidden_act"] = "relu"
    assert heads == expected
    segmentor = build_mmseg(case[0], heads)
    segmentor.load_state_dict(checkpoint["state_dict"], strict=True)
    with torch.no_grad():
        meta = [dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64))]
        mm_logits = segmentor.encode_decode(x, meta)
        mm_aux = segmentor.auxiliary_head(segmentor.extract_feat(x))
    assert relative_error([logits, aux], [mm_logits, mm_aux]) < TOLERANCE

    assert main(["convert", str(tmp_path / "seg.pth"), str(tmp_path / "back"), "--to", "hf"]) == 0
    back, info = UperNetForSemanticSegmentation.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert back.config.id2label == dict(enumerate(LABELS))
    assert relative_error([logits, aux], list(_heads(back.eval(), x))) < TOLERANCE


def _one_line_exit_2(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    swin = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                   out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=8, auxiliary_channels=8, auxiliary_in_channels=32, num_labels=2))
    swin.save_pretrained(tmp_path / "swin")
    assert "backbone is swin" in _one_line_exit_2(["convert", str(tmp_path / "swin"), str(tmp_path / "a.pth")], capsys)

    small_upernet().save_pretrained(tmp_path / "no_config")
    (tmp_path / "no_config" / "config.json").unlink()
    assert "no config.json" in _one_line_exit_2(["convert", str(tmp_path / "no_config"), str(tmp_path / "b.pth")],
                                                capsys)

    (tmp_path / "exists.pth").write_bytes(b"keep me")
    line = _one_line_exit_2(["convert", str(tmp_path / "swin"), str(tmp_path / "exists.pth")], capsys)
    assert "exists" in line and "--force" in line and (tmp_path / "exists.pth").read_bytes() == b"keep me"

    line = _one_line_exit_2(["convert", str(tmp_path / "swin"), str(tmp_path / "c"), "--to", "onnx"], capsys)
    assert "'onnx'" in line and "cvx2, hf, timm, official" in line
    assert not any((tmp_path / name).exists() for name in ("a.pth", "b.pth", "c"))


def test_a_hub_upernet_converts_like_a_folder(tmp_path):
    from cvx2_backbone.weights import convert_checkpoint, use_downloader
    from tests.helpers.weights import FakeHub

    small_upernet().save_pretrained(tmp_path / "hf")
    hub = FakeHub({("org/upernet", name): tmp_path / "hf" / name for name in ("model.safetensors", "config.json")})
    with use_downloader(hub):
        result = convert_checkpoint("hf://org/upernet", tmp_path / "seg.pth")
    assert result.written.format == "mmseg" and ("org/upernet", "config.json", None) in hub.requests
    checkpoint = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert checkpoint["meta"]["dataset_meta"]["classes"] == LABELS
    expected = {f"backbone.{k}" for k in ("norm0.weight", "stages.2.5.grn.gamma", "downsample_layers.3.1.bias")}
    assert expected <= set(checkpoint["state_dict"])


def test_mmseg_activation_comes_from_the_training_config_or_is_noted(tmp_path, capsys):
    """A training checkpoint has no backbone_arch; mmengine's meta.cfg (read as text) names the activation."""
    small_upernet(V2_ATTO_RELU).save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "seg.pth")]) == 0
    state = torch.load(tmp_path / "seg.pth", weights_only=True)["state_dict"]
    cfg = "model = dict(backbone=dict(type='cvx2_backbone.ConvNeXtV2', arch='atto', hidden_act='relu'))"
    torch.save({"state_dict": state, "meta": {"cfg": cfg}}, tmp_path / "trained.pth")
    torch.save({"state_dict": state}, tmp_path / "bare.pth")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "trained.pth"), str(tmp_path / "a"), "--to", "hf"]) == 0
    assert main(["convert", str(tmp_path / "bare.pth"), str(tmp_path / "b"), "--to", "hf"]) == 0
    assert capsys.readouterr().out.count("does not record its activation: written as GELU") == 1
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("a", "b")]
    assert [c["backbone_config"]["hidden_act"] for c in configs] == ["relu", "gelu"]
