"""Checkpoint layouts and containers other than the timm/HF parity cases, key conversion, arch reading, errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from cvx2_backbone import ConvNeXt, ConvNeXtV2
from cvx2_backbone.weights import (ArchMismatchError, ArchSpec, CheckpointError, convert_state_dict, infer_arch,
                                   load_pretrained, read_checkpoint)
from tests.helpers.weights import (SMALL_ARCH, assert_same_outputs, fresh_like, image, official_layout,
                                   small_backbone)


def test_official_ema_container_is_preferred(tmp_path):
    source, other = small_backbone(seed=1), small_backbone(seed=2)
    path = tmp_path / "convnextv2_small_ema.pt"
    torch.save({"model": official_layout(other), "model_ema": official_layout(source), "epoch": 3}, path)
    model = fresh_like(source)
    report = load_pretrained(model, path)
    assert_same_outputs(source, model, image())
    assert report.format == "official" and any("model_ema" in n for n in report.notes)
    assert {k.rsplit(".", 1)[0] for k in report.head_unused} == {"norm", "head"}
    assert not report.unexpected


def test_convert_reports_format_and_keeps_the_classifier():
    model = small_backbone(v2=False)
    converted = convert_state_dict({"model": official_layout(model, num_classes=7)})
    assert converted.format == "official"
    assert converted.state_dict["head.weight"].shape == (7, SMALL_ARCH["dims"][-1])
    assert set(converted.state_dict) == set(model.state_dict()) | {"norm.weight", "norm.bias", "head.weight",
                                                                   "head.bias"}
    arch = infer_arch({"model": official_layout(model, num_classes=7)})
    assert (arch.version, arch.layer_scale, arch.num_classes, arch.preset) == ("V1", True, 7, None)
    assert arch.depths == tuple(SMALL_ARCH["depths"]) and arch.dims == tuple(SMALL_ARCH["dims"])


def test_detector_checkpoint_with_training_state_loads_output_norms_and_neck(tmp_path):
    source = small_backbone(out_indices=(0, 1, 2, 3), out_norm=True)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state.update({"neck.lateral_convs.0.conv.weight": torch.randn(4, 8, 1, 1), "rpn_head.rpn_conv.weight":
                  torch.randn(4, 4, 3, 3), "roi_head.bbox_head.fc_cls.weight": torch.randn(3, 4)})
    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = tmp_path / "epoch_12.pth"
    torch.save({"meta": {"epoch": 12, "seed": np.int64(3), "cfg": "model = dict()"}, "state_dict": state,
                "message_hub": {"log_scalars": {"loss": buffer}}, "optimizer": {"state": {}, "param_groups": []}},
               path)
    model = fresh_like(source, out_indices=(0, 1, 2, 3), out_norm=True)
    report = load_pretrained(model, path)
    assert_same_outputs(source, model, image())  # output norms included
    assert not report.norms_not_in_checkpoint and not report.unexpected
    assert report.discarded == {"rpn_head": 1, "roi_head": 1}
    assert not any("skipped" in n for n in report.notes)  # mmengine's objects are allowed by importing the package
    assert list(read_checkpoint(path).neck) == ["lateral_convs.0.conv.weight"]


def test_ddp_prefix_and_explicit_prefix():
    source = small_backbone()
    wrapped = {"state_dict": {f"module.backbone.{k}": v for k, v in source.state_dict().items()}}
    model = fresh_like(source)
    load_pretrained(model, wrapped, prefix="backbone")
    assert_same_outputs(source, model, image())
    with pytest.raises(CheckpointError, match=r"no keys start with the prefix 'encoder\.'.*backbone\."):
        load_pretrained(fresh_like(source), wrapped, prefix="encoder.")


def test_mmpretrain_classifier_layout():
    source = small_backbone(v2=True)
    rules = [(r"\.dwconv\.", ".depthwise_conv."), (r"\.pwconv(\d)\.", r".pointwise_conv\1.")]
    state = {}
    for key, value in source.state_dict().items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        state[f"backbone.{key}"] = value
    width = source.dims[-1]
    state.update({"backbone.norm3.weight": torch.full((width,), 2.0), "backbone.norm3.bias": torch.zeros(width),
                  "head.fc.weight": torch.randn(10, width), "head.fc.bias": torch.zeros(10)})
    converted = convert_state_dict({"meta": {}, "state_dict": state})
    assert converted.format == "mmpretrain"
    assert torch.equal(converted.state_dict["norm.weight"], state["backbone.norm3.weight"])  # classifier norm
    assert converted.state_dict["head.weight"].shape == (10, width) and "norm3.weight" not in converted.state_dict
    model = fresh_like(source)
    load_pretrained(model, {"state_dict": state})
    assert_same_outputs(source, model, image())


def test_mmpretrain_conv_pointwise_layers_are_reshaped():
    source = small_backbone(v2=False)
    state = {}
    for key, value in source.state_dict().items():
        if re.search(r"pwconv\d\.weight$", key):
            value = value[:, :, None, None]  # linear_pw_conv=False stores 1x1 convs
        state[re.sub(r"\.pwconv(\d)\.", r".pointwise_conv\1.", key.replace(".dwconv.", ".depthwise_conv."))] = value
    model = fresh_like(source)
    assert load_pretrained(model, state).format == "mmpretrain"
    assert_same_outputs(source, model, image())


def test_wrong_size_names_the_checkpoint_size():
    atto = ConvNeXtV2(arch="atto")
    femto = ConvNeXtV2(arch="femto")
    with pytest.raises(ArchMismatchError, match=r"looks like ConvNeXt V2 atto.*backbone is ConvNeXt V2 femto.*"
                                                r"arch='atto'"):
        load_pretrained(femto, {"model": atto.state_dict()})


def test_v1_weights_into_v2_backbone_is_one_clear_error():
    v1 = small_backbone(v2=False)
    with pytest.raises(ArchMismatchError) as info:
        load_pretrained(ConvNeXtV2(arch=dict(SMALL_ARCH)), v1.state_dict())
    message = str(info.value)
    assert "ConvNeXt V1 (no GRN)" in message and "cvx2_backbone.ConvNeXt'" in message
    assert "layer_scale_init_value=1e-6" in message


def test_missing_or_unexpected_backbone_tensors_are_errors_unless_allow_partial():
    source = small_backbone()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("stages.3.0.pwconv2")}
    with pytest.raises(CheckpointError, match="lack 2 of the backbone's tensors.*stages.3.0.pwconv2.*allow_partial"):
        load_pretrained(fresh_like(source), state)
    model = fresh_like(source)
    kept = model.stages[3][0].pwconv2.weight.detach().clone()
    report = load_pretrained(model, state, allow_partial=True)
    assert report.missing == ["stages.3.0.pwconv2.weight", "stages.3.0.pwconv2.bias"] and not report.complete
    torch.testing.assert_close(model.stages[3][0].pwconv2.weight, kept, rtol=0, atol=0)  # left at its init
    torch.testing.assert_close(model.stages[3][0].pwconv1.weight, source.stages[3][0].pwconv1.weight)

    extra = {**source.state_dict(), "stages.0.0.adapter.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="1 tensors the backbone does not have.*stages.0.0.adapter.weight"):
        load_pretrained(fresh_like(source), extra)
    report = load_pretrained(fresh_like(source), extra, allow_partial=True)
    assert report.unexpected == ["stages.0.0.adapter.weight"] and "UNEXPECTED" in report.summary()


def test_unknown_layout_and_non_state_dicts_are_errors():
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout.*huggingface.*timm.*mmpretrain"):
        convert_state_dict({"features.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not a state dict"):
        convert_state_dict([torch.zeros(1)])
    with pytest.raises(CheckpointError, match="no state dict found.*epoch"):
        convert_state_dict({"epoch": 3, "args": "x"})


def test_arch_from_configs_and_building_from_weights():
    hf_v2 = {"model_type": "convnextv2", "depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768],
             "architectures": ["ConvNextV2ForImageClassification"], "id2label": {str(i): str(i) for i in range(1000)}}
    arch = infer_arch(hf_v2)
    assert (arch.preset, arch.version, arch.layer_scale, arch.num_classes) == ("tiny", "V2", False, 1000)
    hf_v1 = {"model_type": "convnext", "depths": [3, 3, 27, 3], "hidden_sizes": [96, 192, 384, 768],
             "layer_scale_init_value": 1e-6, "hidden_act": "gelu", "architectures": ["ConvNextModel"]}
    arch = infer_arch(hf_v1)
    assert (arch.preset, arch.version, arch.layer_scale, arch.num_classes) == ("small", "V1", True, None)
    timm_cfg = {"architecture": "convnextv2_nano", "num_classes": 1000}
    assert infer_arch(timm_cfg).preset == "nano"
    with pytest.raises(CheckpointError, match="not a ConvNeXt config"):
        infer_arch({"model_type": "vit", "hidden_sizes": [1]})

    source = small_backbone(v2=False)
    checkpoint = read_checkpoint(source.state_dict())
    assert checkpoint.backbone_class is ConvNeXt
    assert checkpoint.arch.backbone_cfg()["type"] == "cvx2_backbone.ConvNeXt"
    model = checkpoint.arch.build_backbone(out_norm=False)
    checkpoint.load_into(model)
    assert_same_outputs(source, model, image())
    assert ArchSpec.of_model(model) == ArchSpec.of_model(source)
