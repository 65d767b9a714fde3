"""Safe reading: unsafe pickles are refused (and never executed), corrupt and truncated files fail clearly."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cvx2_backbone.weights import (UNSAFE_PICKLE_ENV, CheckpointError, UnsafeCheckpointError, load_pretrained,
                                   read_checkpoint)
from test_weights_support import assert_same_outputs, fresh_like, image, small_backbone

CALLS: list[str] = []


def record_call(tag: str) -> str:
    """What a malicious pickle would run; here it only leaves a trace."""
    CALLS.append(tag)
    return tag


class Payload:
    def __reduce__(self):
        return record_call, ("payload ran",)


@pytest.fixture(params=["zip", "legacy"])
def malicious_checkpoint(tmp_path, request):
    source = small_backbone()
    path = tmp_path / "malicious.pth"
    torch.save({"model": source.state_dict(), "extra": Payload()}, path,
               _use_new_zipfile_serialization=request.param == "zip")
    CALLS.clear()
    return source, path


def test_unsafe_pickle_is_refused_without_running_it(malicious_checkpoint, monkeypatch):
    monkeypatch.delenv(UNSAFE_PICKLE_ENV, raising=False)
    source, path = malicious_checkpoint
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pretrained(fresh_like(source), path)
    message = str(info.value)
    assert "record_call" in message  # names the object the pickle needs
    assert "run any code" in message and f"{UNSAFE_PICKLE_ENV}=1" in message and "trust_pickle=True" in message
    assert CALLS == []


def test_unsafe_pickle_loads_after_an_explicit_opt_in(malicious_checkpoint, monkeypatch):
    source, path = malicious_checkpoint
    model = fresh_like(source)
    load_pretrained(model, path, trust_pickle=True)
    assert_same_outputs(source, model, image())
    assert CALLS == ["payload ran"]
    monkeypatch.setenv(UNSAFE_PICKLE_ENV, "1")
    assert read_checkpoint(path).notes[0].startswith("unpickled in full")
    with pytest.raises(UnsafeCheckpointError):  # the argument overrides the environment
        read_checkpoint(path, trust_pickle=False)


@pytest.mark.parametrize("zip_format", [True, False])
def test_training_bookkeeping_objects_load_inert(tmp_path, monkeypatch, zip_format):
    monkeypatch.delenv(UNSAFE_PICKLE_ENV, raising=False)
    source = small_backbone()
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=1e-3), "epoch": np.int64(99),
                "mean": np.zeros(3)}, path, _use_new_zipfile_serialization=zip_format)
    model = fresh_like(source)
    report = load_pretrained(model, path)
    assert_same_outputs(source, model, image())
    assert "argparse.Namespace" in report.notes[0] and "numpy" in report.notes[0]


@pytest.mark.parametrize("kind", ["torch", "safetensors"])
def test_truncated_files_fail_clearly(tmp_path, kind):
    state = small_backbone().state_dict()
    path = tmp_path / ("weights.safetensors" if kind == "safetensors" else "weights.pth")
    save_file(state, str(path)) if kind == "safetensors" else torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path.name} is a corrupt or truncated .*download it again"):
        read_checkpoint(path)


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML/XML page"),
    (b"\x00\x01garbage bytes of no known format", "not a checkpoint this package can read"),
    (b"\x80\x02garbage pickle", "corrupt or truncated torch checkpoint"),
])
def test_non_checkpoint_files_fail_clearly(tmp_path, content, expected):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(path)
