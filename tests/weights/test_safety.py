"""Safe reading: unsafe pickles are refused (and never executed), corrupt and truncated files fail clearly."""
from __future__ import annotations

import argparse
import codecs
import os
import re
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cvx2_backbone.weights import (UNSAFE_PICKLE_ENV, CheckpointError, UnsafeCheckpointError, load_pretrained,
                                   read_checkpoint)
from tests.helpers.weights import assert_same_outputs, fresh_like, image, small_backbone

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


class Calls:
    """Pickles as ``function(*args)``: what a malicious checkpoint makes the unpickler do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class CustomObject:
    """A class of the code that wrote the file, pickled by reference."""


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload,named,dangerous", [
    (lambda marker: Calls(os.system, f"touch {marker}"), r"os.system \(pickled as posix.system\)", True),
    (lambda marker: Calls(eval, f"open({str(marker)!r}, 'w')"), r"builtins.eval", True),
    (lambda marker: Calls(subprocess.check_output, ["touch", str(marker)]),
     r"subprocess.check_output( \(pickled as commands.check_output\))?", True),
    (lambda marker: CustomObject(), rf"{__name__}.CustomObject", False),
], ids=["os.system", "eval", "subprocess", "custom-class"])
def test_every_refused_global_is_a_safety_refusal_naming_it(tmp_path, monkeypatch, zip_format, payload, named,
                                                          dangerous):
    monkeypatch.delenv(UNSAFE_PICKLE_ENV, raising=False)
    marker = tmp_path / "ran"
    path = tmp_path / "model.pth"
    torch.save({"model": small_backbone().state_dict(), "extra": payload(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "a safety refusal, not a corrupt file" in message and "corrupt or truncated" not in message
    assert re.search(rf"asks to call or build {named}", message), message
    assert ("treat it as malicious" in message) == dangerous
    assert f"{UNSAFE_PICKLE_ENV}=1" in message and "trust_pickle=True" in message
    assert not marker.exists()  # nothing ran


class BuildsState:
    """Pickles as an allowed call (``_codecs.encode``) whose result then gets state: torch refuses the build."""

    def __reduce__(self):
        return codecs.encode, ("abc", "latin1"), {"attribute": 1}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_refused_build_is_a_safety_refusal_too(tmp_path, monkeypatch, zip_format):
    monkeypatch.delenv(UNSAFE_PICKLE_ENV, raising=False)
    path = tmp_path / "model.pth"
    torch.save({"model": small_backbone().state_dict(), "extra": BuildsState()}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match=r"a safety refusal, not a corrupt file.*build <class 'bytes'>"):
        read_checkpoint(path)


def test_the_opt_in_loads_a_refused_pickle(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    source = small_backbone()
    torch.save({"model": source.state_dict(), "answer": Calls(eval, "6 * 7")}, path)
    monkeypatch.setenv(UNSAFE_PICKLE_ENV, "1")
    checkpoint = read_checkpoint(path)
    assert checkpoint.notes[0] == "unpickled in full (trusted by the user)"
    model = fresh_like(source)
    checkpoint.load_into(model)
    assert_same_outputs(source, model, image())


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
    # numpy's arrays and scalars load as themselves (importing cvx2_backbone allows them); the Namespace is skipped
    assert "argparse.Namespace" in report.notes[0] and "numpy" not in report.notes[0]


@pytest.mark.parametrize("kind", ["torch", "safetensors"])
def test_truncated_files_fail_clearly(tmp_path, kind):
    state = small_backbone().state_dict()
    path = tmp_path / ("weights.safetensors" if kind == "safetensors" else "weights.pth")
    save_file(state, str(path)) if kind == "safetensors" else torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path.name} is a corrupt or truncated .*copy it again") as info:
        read_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError) and "safety" not in str(info.value)


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
