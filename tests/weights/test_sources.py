"""Resolving checkpoint references: folders, shards, hf://, timm/ and URLs through an injected downloader, offline."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from cvx2_backbone.weights import (HubDownloader, HubUnavailableError, load_pretrained, read_checkpoint,
                                   resolve_source, use_downloader)
from tests.helpers.weights import FakeHub, assert_same_outputs, fresh_like, image, small_backbone


@pytest.fixture(scope="module")
def source_model():
    return small_backbone(seed=3)


@pytest.fixture
def weights_file(tmp_path, source_model):
    path = tmp_path / "model.safetensors"
    save_file(source_model.state_dict(), str(path))
    return path


def test_hf_reference_through_init_cfg(source_model, weights_file, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "convnextv2", "hidden_act": "gelu"}))
    hub = FakeHub({("org/convnextv2-small", "model.safetensors"): weights_file,
                   ("org/convnextv2-small", "config.json"): config})
    model = fresh_like(source_model, init_cfg=dict(type="Pretrained", checkpoint="hf://org/convnextv2-small@v1.0"))
    with use_downloader(hub):
        model.init_weights()
    assert_same_outputs(source_model, model, image())
    assert hub.requests[0] == ("org/convnextv2-small", "model.safetensors", "v1.0")
    assert ("org/convnextv2-small", "config.json", "v1.0") in hub.requests


def test_hf_reference_falls_back_to_pytorch_bin(source_model, tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(source_model.state_dict(), path)
    hub = FakeHub({("org/m", "pytorch_model.bin"): path})
    resolved = resolve_source("hf://org/m", hub)
    assert resolved.weight_files == (path,) and resolved.config_file is None
    assert [r[1] for r in hub.requests] == ["model.safetensors", "model.safetensors.index.json",
                                           "pytorch_model.bin", "config.json"]


def test_timm_reference_maps_to_its_hub_repo(weights_file):
    repo = "timm/convnextv2_atto.fcmae_ft_in1k"
    hub = FakeHub({(repo, "model.safetensors"): weights_file})
    assert resolve_source("timm/convnextv2_atto.fcmae_ft_in1k", hub).weight_files == (weights_file,)
    # no tag: timm's default tag for the model
    default = FakeHub({("timm/convnextv2_tiny.fcmae_ft_in22k_in1k", "model.safetensors"): weights_file})
    assert resolve_source("timm/convnextv2_tiny", default).weight_files == (weights_file,)
    with pytest.raises(ValueError, match="timm/<model>.<tag>"):
        resolve_source("timm/", hub)


def test_url_reference_and_unreachable_hub(source_model, weights_file):
    url = "https://example.org/weights/convnextv2_small.safetensors"
    model = fresh_like(source_model)
    with use_downloader(FakeHub(urls={url: weights_file})):
        load_pretrained(model, url)
    assert_same_outputs(source_model, model, image())
    with pytest.raises(HubUnavailableError, match="pass a local path"):
        resolve_source("hf://org/m", FakeHub(unreachable=True))


def test_offline_mode_fails_clearly_without_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(HubUnavailableError, match="offline mode is on.*pass the local file"):
        resolve_source("https://example.org/convnextv2_atto_1k_224_ema.pt", HubDownloader())
    with pytest.raises(HubUnavailableError, match="offline mode is on.*hf download"):
        resolve_source("hf://cvx2-tests/no-such-repo", HubDownloader())
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "cached.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_source("https://example.org/cached.pt", HubDownloader()).weight_files == (cached,)


def test_save_pretrained_folder_with_shards(source_model, tmp_path):
    state = source_model.state_dict()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(tmp_path / name))
    index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = fresh_like(source_model)
    report = load_pretrained(model, tmp_path)
    assert_same_outputs(source_model, model, image())
    assert "merged 2 shards" in report.notes
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shards listed in .* are missing"):
        read_checkpoint(tmp_path)


def test_missing_sources_name_the_accepted_forms(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf://<repo id>.*timm/<model>.<tag>"):
        resolve_source(tmp_path / "nope.pth")
    (tmp_path / "a.pth").write_bytes(b"x")
    (tmp_path / "b.pth").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="holds a.pth, b.pth"):
        resolve_source(tmp_path)
