"""DINOv3 and EUPE ConvNeXt weights in every layout they are published in: they load exactly, the training-only
tensors are left out and reported, and every report states the weights' license.

References, all on random weights saved in each layout in tmp_path (never from a hub):

* timm's ``convnext_*`` reading the same file (timm's own ``checkpoint_filter_fn`` reads the official DINOv3 and
  EUPE layouts, dropping ``norms.*`` and ``projectors.*``);
* transformers' ``DINOv3ConvNextModel`` / ``DINOv3ConvNextBackbone`` saving and reading their folder;
* the DINOv3 repository's dense features, ``ConvNeXt.get_intermediate_layers(x, n=4, reshape=True, norm=...)``
  (facebookresearch/dinov3, ``dinov3/models/convnext.py``): with ``norm=False`` the four raw stage outputs, with
  ``norm=True`` ``norms[i]`` applied to stage i's output, where ``norms[0..2]`` are identities and ``norms[3]`` is
  the final LayerNorm (eps 1e-6) over channels. That formula is computed here on timm's stage outputs
  (:func:`dinov3_dense`) instead of running the repository's code.

Every comparison is fp32, max abs difference relative to the reference's magnitude, within 1e-5.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from cvx2_backbone import ConvNeXt
from cvx2_backbone.weights import convert_checkpoint, load_pretrained, read_checkpoint, use_downloader
from tests.helpers.dinov3 import dinov3_dense, dinov3_state, eupe_state, timm_reader
from tests.helpers.weights import TOLERANCE, FakeHub, image, outputs, randomise, relative_error

SIZES = ("tiny", pytest.param("base", marks=pytest.mark.heavy))  # base: 89M parameters, a minute each on 2 cores
DINOV3_LICENSE = "DINOv3 License"
EUPE_LICENSE = "FAIR Noncommercial Research License"
PARITY: dict[tuple[str, str, str], float] = {}  # (layout, size, reference) -> error, printed with -s


def record(layout: str, size: str, reference: str, error: float) -> None:
    """Keep the measured error for the closing table and check it."""
    PARITY[layout, size, reference] = error
    print(f"parity {layout:28s} {size:5s} vs {reference:38s} {error:.2e}")
    assert error <= TOLERANCE, f"{layout} {size} vs {reference}: relative error {error:.2e} > {TOLERANCE}"


def ours(source, size: str, out_norm) -> torch.nn.Module:
    """Our backbone loaded the way configs load it (init_cfg)."""
    model = ConvNeXt(arch=size, out_norm=out_norm, init_cfg=dict(type="Pretrained", checkpoint=str(source)))
    model.init_weights()
    return model.eval()


@pytest.fixture(scope="module", params=SIZES)
def dinov3_file(request, tmp_path_factory):
    """An official-layout DINOv3 checkpoint as the repository names it, with timm's stage outputs on it."""
    size = request.param
    state = dinov3_state(size, seed=5)
    path = tmp_path_factory.mktemp(f"dinov3-{size}") / f"dinov3_convnext_{size}_pretrain_lvd1689m-0123abcd.pth"
    torch.save(state, path)
    raw = outputs(timm_reader(path, size), image())
    return size, path, state, raw


def test_official_dinov3_layout_matches_timm_and_the_dinov3_formula(dinov3_file):
    size, path, state, raw = dinov3_file
    record("dinov3 official .pth", size, "timm convnext (norm off)", relative_error(raw, outputs(
        ours(path, size, out_norm=False), image())))
    dense = dinov3_dense(raw, state["norms.3.weight"], state["norms.3.bias"])
    model = ours(path, size, out_norm=["stage4"])
    record("dinov3 official .pth", size, "get_intermediate_layers norm=True", relative_error(dense, outputs(
        model, image())))
    # out_norm=True: norm3 is DINOv3's, the others are fresh LayerNorms (reported as such)
    report = load_pretrained(ConvNeXt(arch=size), path)
    assert report.format == "dinov3" and "norm3.weight" in report.loaded
    assert {"norm0.weight", "norm1.weight", "norm2.weight"} <= set(report.norms_not_in_checkpoint)
    assert not report.unexpected and "out_norm=['stage4']" in report.summary()
    assert DINOV3_LICENSE in report.license and "DINOv3 ConvNeXt layout" in report.license


@pytest.mark.parametrize("size", SIZES)
def test_eupe_projectors_and_feature_norms_are_left_out_and_reported(size, tmp_path):
    state = eupe_state(size, seed=7)
    state["norms.0.weight"] = torch.ones(48)  # a training-time feature norm the model does not have
    path = tmp_path / f"eupe_convnext_{size}_pretrain_lvd1689m.pth"
    torch.save(state, path)
    raw = outputs(timm_reader(path, size), image())
    record("eupe .pth (+projectors)", size, "timm convnext (norm off)", relative_error(raw, outputs(
        ours(path, size, out_norm=False), image())))
    record("eupe .pth (+projectors)", size, "get_intermediate_layers norm=True", relative_error(
        dinov3_dense(raw, state["norm.weight"], state["norm.bias"]), outputs(ours(path, size, ["stage4"]), image())))
    report = load_pretrained(ConvNeXt(arch=size, out_norm=["stage4"]), path)
    assert report.format == "eupe"
    assert report.discarded == {"projectors (distillation, training only)": 4,
                                "norms (training-time feature norms)": 1}
    summary = report.summary()
    assert "projectors (distillation, training only) (4)" in summary and "norms.0.weight" in summary
    assert EUPE_LICENSE in report.license and "NONCOMMERCIAL" in report.license


def _hf_config(size: str, **kwargs):
    from transformers import DINOv3ConvNextConfig

    depths, dims = {"tiny": ([3, 3, 9, 3], [96, 192, 384, 768]), "base": ([3, 3, 27, 3], [128, 256, 512, 1024])}[size]
    return DINOv3ConvNextConfig(depths=depths, hidden_sizes=dims, **kwargs)


@pytest.fixture(scope="module", params=SIZES)
def hf_folder(request, tmp_path_factory):
    """A transformers DINOv3ConvNextModel save_pretrained folder of random weights, and its outputs."""
    from transformers import DINOv3ConvNextModel

    size = request.param
    torch.manual_seed(3)
    model = randomise(DINOv3ConvNextModel(_hf_config(size)), seed=13)
    folder = tmp_path_factory.mktemp(f"hf-dinov3-{size}") / "dinov3-convnext"
    model.save_pretrained(folder)
    with torch.no_grad():
        result = model(image(), output_hidden_states=True)
    stages = tuple(result.hidden_states[-4:])
    tokens = result.last_hidden_state[:, 1:]  # the final norm on [pooled, patch tokens]: drop the pooled one
    n, c, h, w = stages[-1].shape
    dense_last = tokens.transpose(1, 2).reshape(n, c, h, w)
    return size, folder, stages, dense_last


def test_transformers_dinov3_folder_matches_model_and_backbone(hf_folder):
    from transformers import DINOv3ConvNextBackbone

    size, folder, stages, dense_last = hf_folder
    assert any(k.startswith("stages.0.downsample_layers.") for k in load_file(str(folder / "model.safetensors")))
    record("transformers dinov3_convnext", size, "DINOv3ConvNextModel hidden_states",
           relative_error(stages, outputs(ours(folder, size, out_norm=False), image())))
    model = ours(folder, size, out_norm=["stage4"])
    record("transformers dinov3_convnext", size, "DINOv3ConvNextModel last_hidden_state",
           relative_error((dense_last,), outputs(model, image())[-1:]))
    backbone = DINOv3ConvNextBackbone.from_pretrained(
        folder, out_features=["stage1", "stage2", "stage3", "stage4"]).eval()
    with torch.no_grad():
        maps = backbone(image()).feature_maps
    record("transformers dinov3_convnext", size, "DINOv3ConvNextBackbone feature_maps",
           relative_error(maps, outputs(ours(folder, size, out_norm=False), image())))
    checkpoint = read_checkpoint(folder)
    assert checkpoint.format == "huggingface-dinov3" and checkpoint.family == "dinov3"
    assert checkpoint.license.name == DINOV3_LICENSE  # no model card: the layout's license


def test_transformers_backbone_folder_and_its_model_card(tmp_path):
    from transformers import DINOv3ConvNextBackbone

    torch.manual_seed(0)
    model = randomise(DINOv3ConvNextBackbone(_hf_config("tiny", out_features=["stage2", "stage4"])), seed=2)
    folder = tmp_path / "backbone"
    model.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: other\nlicense_name: dinov3-license\nlicense_link: https://"
                                      "ai.meta.com/resources/models-and-libraries/dinov3-license/\n---\n# card\n")
    with torch.no_grad():
        expected = model(image()).feature_maps
    ours_model = ConvNeXt(arch="tiny", out_features=["stage2", "stage4"], out_norm=False)
    report = load_pretrained(ours_model, folder)
    assert relative_error(expected, outputs(ours_model.eval(), image())) <= TOLERANCE
    assert "raw stage outputs" in report.summary()
    assert report.license.startswith("license: DINOv3 License (model card README.md")


def test_timm_dinov3_and_eupe_files_read_as_timm_with_their_license(tmp_path):
    size = "tiny"
    state = dinov3_state(size, seed=21)
    official = tmp_path / "dinov3.pth"
    torch.save(state, official)
    reference = timm_reader(official, size)
    timm_model = timm.create_model(f"convnext_{size}", num_classes=0)
    timm_model.load_state_dict(timm.models.convnext.checkpoint_filter_fn(state, timm_model))
    raw = outputs(reference, image())
    for tag, license_name in (("dinov3_lvd1689m", DINOV3_LICENSE), ("eupe_lvd1689m", EUPE_LICENSE)):
        repo = f"timm/convnext_{size}.{tag}"
        folder = tmp_path / tag
        folder.mkdir()
        save_file(timm_model.state_dict(), str(folder / "model.safetensors"))
        hub = FakeHub({(repo, "model.safetensors"): folder / "model.safetensors"})
        with use_downloader(hub):
            checkpoint = read_checkpoint(repo)
            model = ours(repo, size, out_norm=["stage4"])
        assert checkpoint.format == "timm" and checkpoint.family == "dinov3"
        assert checkpoint.license.name == license_name and "timm's pretrained_cfg" in checkpoint.license.evidence
        record(f"timm .{tag.split('_')[0]}", size, "get_intermediate_layers norm=True", relative_error(
            dinov3_dense(raw, state["norm.weight"], state["norm.bias"]), outputs(model, image())))
    # a local timm hub folder states it in config.json's pretrained_cfg
    folder = tmp_path / "dinov3_lvd1689m"
    (folder / "config.json").write_text(json.dumps({"architecture": f"convnext_{size}", "num_classes": 0,
                                                    "pretrained_cfg": {"tag": "dinov3_lvd1689m",
                                                                       "license": "dinov3-license"}}))
    checkpoint = read_checkpoint(folder)
    assert checkpoint.license.name == DINOV3_LICENSE and "config.json" in checkpoint.license.evidence


def test_convert_to_hf_keeps_the_dinov3_family(tmp_path):
    from transformers import DINOv3ConvNextModel

    size, state = "tiny", dinov3_state("tiny", seed=9)
    path = tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m-0123abcd.pth"
    torch.save(state, path)
    raw = outputs(timm_reader(path, size), image())
    result = convert_checkpoint(path, tmp_path / "hf", to="hf")
    model, info = DINOv3ConvNextModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        hidden = model.eval()(image(), output_hidden_states=True).hidden_states[-4:]
    record("cvx2 convert --to hf (dinov3)", size, "DINOv3ConvNextModel from the folder",
           relative_error(raw, tuple(hidden)))
    assert torch.equal(model.layer_norm.weight, state["norm.weight"])
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "license: other\nlicense_name: dinov3-license" in card and "DINOv3 License" in card
    assert "DINOv3ConvNextModel" in result.written.usage
    # back again: the folder reads as the transformers dinov3 layout, with the license its card states
    again = read_checkpoint(tmp_path / "hf")
    assert again.format == "huggingface-dinov3" and again.license.name == DINOV3_LICENSE
    assert again.license.evidence.startswith("model card")


def test_convert_records_the_license_in_what_it_writes(tmp_path):
    state = eupe_state("tiny", seed=1)
    path = tmp_path / "eupe_convnext_tiny_pretrain_lvd1689m.pth"
    torch.save(state, path)
    for to, name in (("cvx2", "out.safetensors"), ("official", "official.pth"), ("timm", "timm.safetensors")):
        convert_checkpoint(path, tmp_path / name, to=to)
        written = read_checkpoint(tmp_path / name)
        assert written.license.name == EUPE_LICENSE, to
        assert written.license.evidence.endswith("(recorded by cvx2 convert)"), to
    assert read_checkpoint(tmp_path / "out.safetensors").family == "dinov3"  # --to hf of it keeps the family


def test_license_of_other_sources(tmp_path):
    from cvx2_backbone import ConvNeXtV2

    state = {k: v.clone() for k, v in ConvNeXtV2(arch="atto", out_norm=False).state_dict().items()}
    official = tmp_path / "convnextv2_atto_1k_224_ema.pt"
    torch.save({"model": state}, official)
    line = read_checkpoint(official).license.line()
    assert line.startswith("license: CC-BY-NC-4.0 (the official ConvNeXt V2 release weights "
                           "(facebookresearch/ConvNeXt-V2: the code is MIT, the weights are not)")
    assert "NONCOMMERCIAL" in line
    v1 = tmp_path / "convnext_tiny_1k_224_ema.pth"
    torch.save({"model": {k: v.clone() for k, v in ConvNeXt(arch="tiny", out_norm=False).state_dict().items()}}, v1)
    assert read_checkpoint(v1).license.identifier == "mit"  # the V1 repository: code and weights under MIT
    plain = tmp_path / "my_weights.pth"
    torch.save(state, plain)
    assert read_checkpoint(plain).license.line().startswith("license: unknown (")
    card_folder = tmp_path / "card"
    card_folder.mkdir()
    save_file(state, str(card_folder / "model.safetensors"))
    (card_folder / "README.md").write_text("---\nlibrary_name: timm\nlicense: apache-2.0\n---\n")
    assert read_checkpoint(card_folder).license.identifier == "apache-2.0"
    # an hf:// repo's model card, fetched through the downloader (here: a card elsewhere than the weights)
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: cc-by-nc-4.0\n---\n")
    hub = FakeHub({("org/m", "model.safetensors"): plain_safetensors(tmp_path, state), ("org/m", "README.md"): card})
    with use_downloader(hub):
        assert read_checkpoint("hf://org/m").license.line().startswith("license: CC-BY-NC-4.0 (model card card.md")


def plain_safetensors(folder, state) -> Path:
    """``state`` saved alone in a folder of its own (no card next to it)."""
    (folder / "bare").mkdir()
    save_file(state, str(folder / "bare" / "model.safetensors"))
    return folder / "bare" / "model.safetensors"


def test_out_norm_names_are_checked():
    with pytest.raises(ValueError, match=r"unknown output name\(s\) \['stage5'\]"):
        ConvNeXt(arch="atto", out_norm=["stage5"])
    model = ConvNeXt(arch="atto", out_indices=(1, 3), out_norm=["stage2"])
    assert hasattr(model, "norm1") and not hasattr(model, "norm3")


def test_info_and_convert_print_the_license(tmp_path, capsys):
    from cvx2_backbone.cli.main import main

    path = tmp_path / "eupe_convnext_tiny_pretrain_lvd1689m.pth"
    torch.save(eupe_state("tiny", seed=2), path)
    assert main(["info", "--weights", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"license: {EUPE_LICENSE} (EUPE ConvNeXt layout" in printed and "NONCOMMERCIAL" in printed
    assert "left out:   projectors (distillation, training only) (4 tensors)" in printed
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 0
    assert f"license:    {EUPE_LICENSE}" in capsys.readouterr().out
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as handle:
        assert handle.metadata()["license"] == "fair-noncommercial-research-license"


def test_feature_extractor_gives_dinov3_dense_features(tmp_path):
    """``cvx2 extract --weights`` (FeatureExtractor) builds DINOv3-family weights with out_norm=['stage4']."""
    from cvx2_backbone.extraction.extractor import FeatureExtractor

    state = dinov3_state("tiny", seed=4)
    path = tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m-0123abcd.pth"
    torch.save(state, path)
    extractor = FeatureExtractor(None, path, runtime="torch")
    raw = outputs(timm_reader(path, "tiny"), image())
    expected = dinov3_dense(raw, state["norm.weight"], state["norm.bias"])
    assert relative_error(expected, outputs(extractor.backbone, image())) <= TOLERANCE
