"""`cvx2 convert --to hf|timm|official` and save_checkpoint(format=...): the files load in transformers and timm
through their own entry points, strictly, and give this project's stage outputs."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import transformers
from timm.models import load_checkpoint

from cvx2_backbone import ConvNeXt, ConvNeXtV2
from cvx2_backbone.cli.main import main
from cvx2_backbone.weights import Checkpoint, read_checkpoint, save_checkpoint
from tests.helpers.weights import assert_same_outputs, image, randomise, relative_error

CASES = [(ConvNeXtV2, "atto"), (ConvNeXtV2, "tiny"), (ConvNeXt, "tiny")]
IDS = ["v2-atto", "v2-tiny", "v1-tiny"]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def backbone(request):
    """A randomised backbone with output norms on all four stages (as after detection/segmentation training)."""
    cls, size = request.param
    torch.manual_seed(0)
    return randomise(cls(arch=size, out_norm=True), seed=7)


def _hf(model, kind: str):
    return getattr(transformers, f"{'ConvNextV2' if model.use_grn else 'ConvNext'}{kind}")


def test_hf_backbone_loads_in_transformers_with_the_same_stage_outputs(backbone, tmp_path):
    written = save_checkpoint(read_checkpoint(backbone.state_dict()), tmp_path / "hf", format="hf")
    assert written.left_out == [] and written.filled_in == []
    hf_model, info = _hf(backbone, "Backbone").from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["out_features"] == ["stage1", "stage2", "stage3", "stage4"] and config["hidden_act"] == "gelu"
    assert config["depths"] == list(backbone.depths) and config["hidden_sizes"] == list(backbone.dims)
    x = image(size=(64, 64))
    with torch.no_grad():
        assert_same_outputs(hf_model.eval()(x).feature_maps, backbone, x)


def test_timm_state_dict_loads_strictly_with_the_same_stage_outputs(backbone, tmp_path):
    dst = tmp_path / "timm.safetensors"
    written = save_checkpoint(read_checkpoint(backbone.state_dict()), dst, format="timm")
    assert written.left_out == ["output norms norm0, norm1, norm2, norm3 (timm's ConvNeXt has no per-stage norms)"]
    assert written.filled_in and "head.norm" in written.filled_in[0]
    name = f"convnext{'v2' if backbone.use_grn else ''}_{'atto' if backbone.dims[0] == 40 else 'tiny'}"
    strict = timm.create_model(name, num_classes=0)
    load_checkpoint(strict, str(dst), strict=True)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(dst), num_classes=0))
    assert written.usage == f"timm.create_model('{name}', pretrained=True, " \
                            f"pretrained_cfg_overlay=dict(file='{dst}', num_classes=0))"
    if backbone.dims[0] == 40:  # atto..nano: timm's 1x1-conv MLP layout
        assert model.stages[0].blocks[0].mlp.fc1.weight.dim() == 4
    x = image(size=(64, 64))
    backbone.out_norm = False  # timm's stages have no output norms
    try:
        with torch.no_grad():
            for other in (strict, model):
                assert_same_outputs(other.eval().forward_intermediates(x, intermediates_only=True), backbone, x)
    finally:
        backbone.out_norm = True


def test_a_classifier_keeps_its_head_in_every_layout(tmp_path):
    torch.manual_seed(1)
    backbone = randomise(ConvNeXtV2(arch="atto", out_norm=False, out_features=["stage4"]), seed=8)
    state = dict(backbone.state_dict())
    state.update({"norm.weight": 1 + 0.2 * torch.randn(320), "norm.bias": 0.1 * torch.randn(320),
                  "head.weight": 0.05 * torch.randn(5, 320), "head.bias": 0.1 * torch.randn(5)})
    checkpoint = read_checkpoint(state)
    x = image(size=(64, 64))
    with torch.no_grad():
        (last,) = backbone(x)
        pooled = torch.nn.functional.layer_norm(last.mean((-2, -1)), (320,), state["norm.weight"], state["norm.bias"],
                                                eps=1e-6)
        expected = pooled @ state["head.weight"].T + state["head.bias"]

    save_checkpoint(checkpoint, tmp_path / "timm.pth", format="timm")
    model = timm.create_model("convnextv2_atto", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "timm.pth"), num_classes=5))
    with torch.no_grad():
        assert relative_error([expected], [model.eval()(x)]) < 1e-5

    written = save_checkpoint(checkpoint, tmp_path / "hf", format="hf")
    assert written.usage.startswith("transformers.ConvNextV2ForImageClassification")
    hf_model, info = transformers.ConvNextV2ForImageClassification.from_pretrained(tmp_path / "hf",
                                                                                   output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():  # transformers' pooled LayerNorm uses eps 1e-12 (its config), ours 1e-6
        assert relative_error([expected], [hf_model.eval()(x).logits]) < 1e-4
    base, info = transformers.ConvNextV2Model.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "mismatched_keys")), info

    save_checkpoint(checkpoint, tmp_path / "official.pth", format="official")
    official = torch.load(tmp_path / "official.pth", weights_only=True)["model"]
    assert official["stages.0.0.grn.gamma"].shape == (1, 1, 1, 160) and "head.weight" in official
    assert torch.equal(read_checkpoint(tmp_path / "official.pth").state_dict["head.weight"], state["head.weight"])


def test_hf_model_without_output_norms(tmp_path):
    torch.manual_seed(2)
    backbone = randomise(ConvNeXtV2(arch="atto", out_norm=False), seed=9)
    written = save_checkpoint(read_checkpoint(backbone.state_dict()), tmp_path / "hf", format="hf")
    assert "layernorm" in written.filled_in[0]
    model, info = transformers.ConvNextV2Model.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    x = image(size=(64, 64))
    with torch.no_grad():
        assert_same_outputs(model.eval()(x, output_hidden_states=True).hidden_states[1:], backbone, x)


def test_cli_convert_to_each_layout_and_back(tmp_path, capsys):
    torch.manual_seed(3)
    backbone = randomise(ConvNeXtV2(arch="atto", out_norm=True), seed=10)
    source = tmp_path / "source.safetensors"
    from safetensors.torch import save_file
    save_file(backbone.state_dict(), str(source))
    x = image(size=(64, 64))
    for to, dst in (("hf", tmp_path / "hf"), ("timm", tmp_path / "t.safetensors"),
                    ("official", tmp_path / "o.pth"), ("cvx2", tmp_path / "c.pth")):
        assert main(["convert", str(source), str(dst), "--to", to]) == 0
        printed = capsys.readouterr().out
        assert f"{to} layout" in printed and "use it as:" in printed
        back = read_checkpoint(dst)  # every layout written reads back through this project's loader
        fresh = ConvNeXtV2(arch="atto", out_norm=to in ("hf", "cvx2"))
        back.load_into(fresh, log=False)
        reference = backbone
        if to in ("timm", "official"):
            printed_left_out = "output norms norm0, norm1, norm2, norm3"
            assert printed_left_out in printed
            reference = ConvNeXtV2(arch="atto", out_norm=False)
            reference.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith("norm")})
        assert_same_outputs(reference, fresh, x)
    (tmp_path / "hf" / "notes.txt").write_text("the user's own file")  # --force replaces only what convert writes
    assert main(["convert", str(source), str(tmp_path / "hf"), "--to", "hf", "--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                  "notes.txt"]
    assert (tmp_path / "hf" / "notes.txt").read_text() == "the user's own file"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_custom_size_and_activation_reach_transformers_and_timm(tmp_path):
    """A size without a preset and a ReLU MLP: config.json and timm's create_model arguments carry both."""
    torch.manual_seed(4)
    backbone = randomise(ConvNeXtV2(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64]), hidden_act="relu",
                                    out_norm=True, out_features=["stage2", "stage4"]), seed=11)
    assert save_checkpoint(read_checkpoint(backbone.state_dict()), tmp_path / "bare", format="hf").notes[0].startswith(
        "the checkpoint does not record its activation: written as GELU")
    checkpoint = Checkpoint.of_model(backbone)  # the weights with the model's architecture, activation included
    x = image(size=(64, 64))
    save_checkpoint(checkpoint, tmp_path / "hf", format="hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["hidden_act"], config["out_features"]) == ("relu", ["stage2", "stage4"])
    hf_model = transformers.ConvNextV2Backbone.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        assert_same_outputs(hf_model.eval()(x).feature_maps, backbone, x)

    written = save_checkpoint(checkpoint, tmp_path / "t.safetensors", format="timm")
    assert "depths=(1, 1, 2, 1)" in written.usage and "act_layer='relu'" in written.usage
    model = timm.create_model("convnextv2_tiny", pretrained=True, depths=(1, 1, 2, 1), dims=(8, 16, 32, 64),
                              conv_mlp=False, act_layer="relu",
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "t.safetensors"), num_classes=0))
    backbone.out_norm = False
    with torch.no_grad():
        stages = model.eval().forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        assert_same_outputs(stages, backbone, x)


def test_the_command_offers_every_writer():
    from cvx2_backbone.cli.commands.convert import FORMATS as COMMAND_FORMATS
    from cvx2_backbone.weights import FORMATS

    assert COMMAND_FORMATS == FORMATS == ("cvx2", "hf", "timm", "official")


@pytest.mark.parametrize("name,format", [("x.onnx", "cvx2"), ("x.onnx", "timm"), ("x", "official")])
def test_save_checkpoint_refuses_a_suffix_that_promises_another_format(tmp_path, name, format):
    """Issue 28 item 7: the API wrote a torch pickle named x.onnx; now it refuses as the CLI does."""
    checkpoint = read_checkpoint(ConvNeXtV2(arch="atto").state_dict())
    with pytest.raises(ValueError, match=r"a checkpoint is written as .safetensors or a torch file \(.pth, .pt, "
                                         r".bin, .ckpt\), not (.onnx|a name without suffix)"):
        save_checkpoint(checkpoint, tmp_path / name, format=format)
    assert not list(tmp_path.iterdir())  # nothing written, no staging file
