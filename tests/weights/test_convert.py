"""`cvx2 convert` and tools/convert_checkpoint.py write clean checkpoints that load back."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from cvx2_backbone.cli.main import main
from cvx2_backbone.weights import load_pretrained
from tests.helpers.weights import assert_same_outputs, fresh_like, image, small_backbone

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_checkpoint.py"


def run_convert(*argv: str) -> int:
    return main(["convert", *argv])


@pytest.fixture
def timm_style_checkpoint(tmp_path):
    """A checkpoint in timm's layout (keys renamed from this project's), with a classifier."""
    source = small_backbone(seed=5)
    state = {}
    for key, value in source.state_dict().items():
        key = key.replace("downsample_layers.0.", "stem.")
        for old, new in ((".dwconv.", ".conv_dw."), (".pwconv1.", ".mlp.fc1."), (".pwconv2.", ".mlp.fc2."),
                         (".grn.gamma", ".mlp.grn.weight"), (".grn.beta", ".mlp.grn.bias")):
            key = key.replace(old, new)
        parts = key.split(".")
        if parts[0] == "downsample_layers":
            key = ".".join(["stages", parts[1], "downsample", *parts[2:]])
        elif parts[0] == "stages":
            key = ".".join(["stages", parts[1], "blocks", *parts[2:]])
        state[key] = value
    width = source.dims[-1]
    state.update({"head.norm.weight": torch.ones(width), "head.norm.bias": torch.zeros(width),
                  "head.fc.weight": torch.randn(3, width), "head.fc.bias": torch.zeros(3)})
    path = tmp_path / "timm_model.pth"
    torch.save(state, path)
    return source, path


def test_cli_convert_to_safetensors(timm_style_checkpoint, tmp_path, capsys):
    source, path = timm_style_checkpoint
    dst = tmp_path / "out" / "converted.safetensors"
    assert run_convert(str(path), str(dst)) == 0
    printed = capsys.readouterr().out
    assert "detected:   timm" in printed and "3-class head" in printed and str(dst) in printed
    with safe_open(str(dst), "pt") as handle:
        metadata = handle.metadata()
        assert "head.weight" in handle.keys() and "stages.0.0.grn.gamma" in handle.keys()
    assert metadata["source_format"] == "timm"
    assert json.loads(metadata["arch"])["dims"] == list(source.dims)
    model = fresh_like(source)
    report = load_pretrained(model, dst)
    assert report.format == "official" and not report.unexpected
    assert_same_outputs(source, model, image())
    assert run_convert(str(path), str(dst)) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err


def test_tool_script_writes_a_weights_only_torch_file(timm_style_checkpoint, tmp_path, monkeypatch):
    source, path = timm_style_checkpoint
    dst = tmp_path / "converted.pth"
    monkeypatch.setattr(sys, "argv", [str(TOOL), str(path), str(dst), "--backbone-only"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(TOOL), run_name="__main__")
    assert info.value.code == 0
    saved = torch.load(dst, weights_only=True)
    assert saved["meta"]["source_format"] == "timm"
    assert not any(k.startswith(("head.", "norm.")) for k in saved["state_dict"])
    model = fresh_like(source)
    load_pretrained(model, dst)
    assert_same_outputs(source, model, image())


def test_cli_convert_reports_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"<html>not found</html>")
    assert run_convert(str(bad), str(tmp_path / "out.safetensors")) == 2
    assert "HTML/XML page" in capsys.readouterr().err
