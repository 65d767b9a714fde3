"""A Hugging Face folder's config.json is honoured (activation, outputs) or, where it contradicts the weights or
the configured backbone, refused with both named; checked against transformers' own models on the same folder."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import ConvNextV2Backbone, ConvNextV2Config, ConvNextV2ForImageClassification

from cvx2_backbone import ConvNeXtV2
from cvx2_backbone.cli.main import main
from cvx2_backbone.extraction.classifier import Classifier
from cvx2_backbone.extraction.extractor import FeatureExtractor
from cvx2_backbone.weights import ArchMismatchError, read_checkpoint
from tests.helpers.weights import SMALL_ARCH, assert_same_outputs, image, randomise

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def hf_config(**overrides) -> ConvNextV2Config:
    return ConvNextV2Config(depths=SMALL_ARCH["depths"], hidden_sizes=SMALL_ARCH["dims"], **overrides)


@pytest.fixture(scope="module")
def relu_backbone(tmp_path_factory):
    """A transformers ConvNextV2Backbone with ReLU in its MLPs, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("hf_relu")
    torch.manual_seed(0)
    model = randomise(ConvNextV2Backbone(hf_config(hidden_act="relu", out_features=STAGES)), seed=1)
    model.save_pretrained(folder)
    return model, folder


def test_relu_is_followed_through_init_cfg(relu_backbone):
    hf_model, folder = relu_backbone
    x = image(size=(64, 64))
    with torch.no_grad():
        expected = hf_model(x).feature_maps
    ours = ConvNeXtV2(arch=dict(SMALL_ARCH), hidden_act="relu",
                      init_cfg=dict(type="Pretrained", checkpoint=str(folder)))
    ours.init_weights()
    assert_same_outputs(expected, ours, x)


def test_relu_into_a_gelu_backbone_is_refused_naming_both(relu_backbone):
    _, folder = relu_backbone
    gelu = ConvNeXtV2(arch=dict(SMALL_ARCH), init_cfg=dict(type="Pretrained", checkpoint=str(folder)))
    before = {k: v.clone() for k, v in gelu.state_dict().items()}
    with pytest.raises(ArchMismatchError, match=r"hidden_act='relu' but the backbone uses 'gelu'"):
        gelu.init_weights()
    assert all(torch.equal(before[k], v) for k, v in gelu.state_dict().items())  # nothing half-loaded


def test_models_built_from_the_weights_use_the_config_activation_and_outputs(relu_backbone, tmp_path):
    """What cvx2 extract/export (FeatureExtractor) and a converted file build from the folder."""
    hf_model, folder = relu_backbone
    x = image(size=(64, 64))
    with torch.no_grad():
        expected = hf_model(x).feature_maps
    extractor = FeatureExtractor(None, weights=str(folder))
    assert extractor.backbone.hidden_act == "relu" and extractor.out_features == STAGES
    assert_same_outputs(expected, extractor.backbone, x)
    converted = tmp_path / "relu.safetensors"
    assert main(["convert", str(folder), str(converted)]) == 0
    assert read_checkpoint(converted).arch.hidden_act == "relu"  # the project's own file keeps the activation
    assert_same_outputs(expected, FeatureExtractor(None, weights=str(converted)).backbone, x)


def test_a_backbone_config_chooses_the_default_outputs(tmp_path):
    model = randomise(ConvNextV2Backbone(hf_config(out_features=["stage2", "stage4"])), seed=2)
    model.save_pretrained(tmp_path)
    extractor = FeatureExtractor(None, weights=str(tmp_path))
    assert extractor.out_features == ["stage2", "stage4"]
    x = image(size=(64, 64))
    with torch.no_grad():
        assert_same_outputs(model(x).feature_maps, extractor.backbone, x)


def test_classify_follows_the_config_activation(tmp_path):
    torch.manual_seed(0)
    model = randomise(ConvNextV2ForImageClassification(hf_config(hidden_act="relu", num_labels=7)), seed=3)
    model.save_pretrained(tmp_path)
    classifier = Classifier(str(tmp_path))
    x = image(size=(64, 64))
    with torch.no_grad():
        expected = model(x).logits.softmax(-1)
        probabilities = classifier(x)
    assert classifier.backbone.hidden_act == "relu"
    assert torch.allclose(probabilities, expected, atol=1e-5), (probabilities - expected).abs().max()


def _edit_config(folder, **changes) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))


@pytest.mark.parametrize("changes, named", [
    (dict(hidden_sizes=[16, 32, 64, 128]), r"hidden_sizes \[16, 32, 64, 128\]"),
    (dict(depths=[2, 2, 2, 2]), r"depths \[2, 2, 2, 2\]"),
    (dict(model_type="convnext"), r"model_type 'convnext'"),
])
def test_a_config_that_contradicts_its_weights_is_refused(tmp_path, capsys, changes, named):
    model = randomise(ConvNextV2Backbone(hf_config(out_features=STAGES)), seed=4)
    model.save_pretrained(tmp_path / "folder")
    _edit_config(tmp_path / "folder", **changes)
    with pytest.raises(ArchMismatchError, match=named) as err:
        read_checkpoint(tmp_path / "folder").arch
    assert "but the weights are ConvNeXt V2 with depths [1, 1, 2, 1] and dims [8, 16, 32, 64]" in str(err.value)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "folder"), str(tmp_path / "out.safetensors")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "config.json says" in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_configured_backbone_of_another_size_is_refused(relu_backbone):
    _, folder = relu_backbone
    other = ConvNeXtV2(arch="atto", hidden_act="relu", init_cfg=dict(type="Pretrained", checkpoint=str(folder)))
    with pytest.raises(ArchMismatchError, match="but the backbone is ConvNeXt V2 atto"):
        other.init_weights()


def test_a_training_checkpoint_config_names_the_activation(tmp_path):
    """mmengine keeps the training config in meta.cfg: a ReLU detector's backbone is built and checked as ReLU."""
    source = randomise(ConvNeXtV2(arch=dict(SMALL_ARCH), hidden_act="relu", out_norm=True), seed=5)
    cfg = "model = dict(backbone=dict(type='cvx2_backbone.ConvNeXtV2', hidden_act='relu'), neck=dict(type='FPN'))"
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "meta": {"cfg": cfg}}, tmp_path / "detector.pth")
    torch.save({"state_dict": state, "meta": {"cfg": cfg.replace("hidden_act='relu'", "arch='tiny'")}},
               tmp_path / "gelu_detector.pth")
    assert read_checkpoint(tmp_path / "detector.pth").arch.hidden_act == "relu"
    assert read_checkpoint(tmp_path / "gelu_detector.pth").arch.hidden_act == "gelu"
    x = image(size=(64, 64))
    assert_same_outputs(source, FeatureExtractor(None, weights=str(tmp_path / "detector.pth")).backbone, x)
    gelu = ConvNeXtV2(arch=dict(SMALL_ARCH),
                      init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "detector.pth")))
    with pytest.raises(ArchMismatchError, match="hidden_act='relu'"):
        gelu.init_weights()
