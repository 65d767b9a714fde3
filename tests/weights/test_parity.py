"""Output parity: weights saved by timm, Hugging Face, torchvision, the official code and the sparse FCMAE encoder give,
once loaded through ``init_cfg``, the same stage outputs as the model that saved them (fp32, 1e-5 relative).

atto covers timm's 1x1-conv MLP; tiny covers the Linear MLP (V2 through timm, V1 through Hugging Face).
"""
from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from cvx2_backbone import ConvNeXt, ConvNeXtV2
from cvx2_backbone.weights import load_pretrained, read_checkpoint
from tests.helpers.weights import TOLERANCE, assert_same_outputs, image, official_layout, outputs, randomise

TIMM_CASES = {
    # name: (timm model, our class, preset, file the weights are saved as)
    "v2-atto": ("convnextv2_atto", ConvNeXtV2, "atto", "model.safetensors"),
    "v1-atto": ("convnext_atto", ConvNeXt, "atto", "pytorch_model.bin"),
    "v2-tiny": ("convnextv2_tiny", ConvNeXtV2, "tiny", "model.safetensors"),
}


def from_init_cfg(cls, arch: str, checkpoint, **kwargs):
    """A backbone initialised the way configs do it: init_cfg=dict(type='Pretrained', checkpoint=...)."""
    model = cls(arch=arch, out_norm=False, init_cfg=dict(type="Pretrained", checkpoint=str(checkpoint)), **kwargs)
    model.init_weights()
    return model.eval()


def save_timm_weights(name: str, path, seed: int) -> None:
    """Random weights of a timm model, saved as timm does for the file's suffix."""
    state = randomise(timm.create_model(name, pretrained=False), seed=seed).state_dict()
    save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)


@pytest.fixture(scope="module", params=list(TIMM_CASES))
def timm_case(request, tmp_path_factory):
    """Random timm weights saved in timm's format, and timm's features_only model loaded from that file."""
    name, cls, arch, filename = TIMM_CASES[request.param]
    path = tmp_path_factory.mktemp(request.param) / filename
    save_timm_weights(name, path, seed=11)
    reference = timm.create_model(name, pretrained=True, features_only=True,
                                  pretrained_cfg_overlay=dict(file=str(path))).eval()
    features_file = path.with_name("features_only.pth")  # keys stem_0.*, stages_0.*
    torch.save(reference.state_dict(), features_file)
    return cls, arch, path, features_file, outputs(reference, image())


def test_timm_parity(timm_case):
    cls, arch, path, features_file, expected = timm_case
    model = from_init_cfg(cls, arch, path)
    assert_same_outputs(expected, model, image())
    # the same weights saved from timm's features_only wrapper, into the same (re-randomised) model
    load_pretrained(randomise(model, seed=99), features_file)
    assert_same_outputs(expected, model, image())


def sparse_encoder_dump(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official layout as the sparse FCMAE pre-training saves it (MinkowskiEngine names, ``encoder.`` prefix).

    MinkowskiEngine keeps a k x k kernel as (k*k, in, out) with the window read column-major
    (row w * k + h holds weight[:, :, h, w]); depthwise kernels are (k*k, C); biases are (1, C).
    """
    dump = {}
    for key, value in official.items():
        if key.startswith(("norm.", "head.")):
            continue  # the encoder has no classifier
        parts = key.split(".")
        if parts[0] == "downsample_layers" and parts[1] != "0":
            if parts[2] == "0":
                key = f"downsample_layers.{parts[1]}.0.ln.{parts[3]}"
            elif parts[3] == "weight":
                key, value = f"downsample_layers.{parts[1]}.1.kernel", value.permute(3, 2, 1, 0).flatten(0, 1)
            else:
                value = value[None]
        elif parts[0] == "stages":
            block, layer = ".".join(parts[:3]), parts[3]
            if key.endswith("dwconv.weight"):
                key, value = f"{block}.dwconv.kernel", value[:, 0].permute(2, 1, 0).flatten(0, 1)
            elif key.endswith("dwconv.bias"):
                value = value[None]
            elif layer == "norm":
                key = f"{block}.norm.ln.{parts[4]}"
            elif layer in ("pwconv1", "pwconv2"):
                key = f"{block}.{layer}.linear.{parts[4]}"
            elif layer == "grn":
                value = value.reshape(1, -1)
        dump[f"encoder.{key}"] = value.contiguous()
    width = official["downsample_layers.0.0.weight"].shape[0]
    dump.update({"mask_token": torch.zeros(1, 512, 1, 1), "proj.weight": torch.randn(512, 8 * width, 1, 1),
                 "decoder.0.dwconv.weight": torch.randn(512, 1, 7, 7), "pred.weight": torch.randn(3072, 512, 1, 1)})
    return dump


@pytest.mark.parametrize("case", ["v2-atto", "v1-atto"])
def test_official_layout_parity(case, tmp_path):
    name, cls, arch, filename = TIMM_CASES[case]
    timm_file = tmp_path / filename
    save_timm_weights(name, timm_file, seed=12)
    loaded = from_init_cfg(cls, arch, timm_file)
    path = tmp_path / f"{name}_1k_224_ema.pt"
    torch.save({"model": official_layout(loaded, num_classes=1000)}, path)
    converted = from_init_cfg(cls, arch, path)
    reference = timm.create_model(name, pretrained=True, features_only=True,
                                  pretrained_cfg_overlay=dict(file=str(timm_file)))
    assert_same_outputs(reference, converted, image())
    if cls is ConvNeXtV2:  # FCMAE pre-training is V2 only
        sparse_path = tmp_path / f"{name}_1k_224_fcmae.pt"
        sparse = sparse_encoder_dump(official_layout(loaded, num_classes=1000))
        torch.save({"model": sparse, "epoch": 1599}, sparse_path)
        assert_same_outputs(reference, from_init_cfg(cls, arch, sparse_path), image())


# --- Hugging Face ----------------------------------------------------------------------------

def hf_stage_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(model(x, output_hidden_states=True).hidden_states[1:])


def test_huggingface_v2_atto_classifier_folder_and_old_grn_names(tmp_path):
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    config = ConvNextV2Config(depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320], num_labels=10)
    hf = randomise(ConvNextV2ForImageClassification(config), seed=13)
    hf.save_pretrained(tmp_path / "new")
    expected = hf_stage_outputs(hf.convnextv2, image())
    assert_same_outputs(expected, from_init_cfg(ConvNeXtV2, "atto", tmp_path / "new"), image())

    old = {re.sub(r"\.grn\.weight$", ".grn.gamma", re.sub(r"\.grn\.bias$", ".grn.beta", k)): v
           for k, v in load_file(str(tmp_path / "new" / "model.safetensors")).items()}
    assert any(k.endswith(".grn.gamma") for k in old)
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "pytorch_model.bin")
    assert_same_outputs(expected, from_init_cfg(ConvNeXtV2, "atto", tmp_path / "old"), image())


def test_huggingface_v2_backbone_norms_become_output_norms(tmp_path):
    from transformers import ConvNextV2Backbone, ConvNextV2Config

    names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    config = ConvNextV2Config(depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320], out_features=names)
    hf = randomise(ConvNextV2Backbone(config), seed=14)
    hf.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = tuple(hf(image()).feature_maps)
    ours = ConvNeXtV2(arch="atto", out_features=names, init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path)))
    ours.init_weights()
    assert_same_outputs(expected, ours, image())


def test_huggingface_v1_tiny_pytorch_bin_folder(tmp_path):
    from transformers import ConvNextConfig, ConvNextModel

    config = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768])
    hf = randomise(ConvNextModel(config), seed=15)
    config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert_same_outputs(hf_stage_outputs(hf, image()), from_init_cfg(ConvNeXt, "tiny", tmp_path), image())


# --- torchvision -----------------------------------------------------------------------------

def torchvision_stage_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The outputs of torchvision's four stages (``features.1``, ``.3``, ``.5``, ``.7``)."""
    stages = []
    with torch.no_grad():
        for index, layer in enumerate(model.eval().features):
            x = layer(x)
            if index % 2 == 1:
                stages.append(x)
    return tuple(stages)


def test_torchvision_v1_tiny_parity_and_classifier(tmp_path):
    import torchvision

    reference = randomise(torchvision.models.convnext_tiny(weights=None), seed=16)
    path = tmp_path / "convnext_tiny-983f1562.pth"  # the name torchvision's weights download under
    torch.save(reference.state_dict(), path)
    model = from_init_cfg(ConvNeXt, "tiny", path)
    assert_same_outputs(torchvision_stage_outputs(reference, image()), model, image())

    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "torchvision" and checkpoint.arch.preset == "tiny" and checkpoint.arch.layer_scale
    # the classifier maps too: torchvision's logits from our last stage, official norm + head
    state = checkpoint.state_dict
    pooled = outputs(model, image())[-1].mean((2, 3))
    logits = F.linear(F.layer_norm(pooled, (768,), state["norm.weight"], state["norm.bias"], 1e-6),
                      state["head.weight"], state["head.bias"])
    with torch.no_grad():
        expected = reference(image())
    assert (logits - expected).abs().max() <= TOLERANCE * expected.abs().max()
