"""`cvx2 convert --force` and `cvx2 export --force` over an earlier output (issue 28, item 6): force replaces what
cvx2 wrote, never a user's other files, and a SIGKILL at any moment leaves the earlier output whole or the new one
complete, never a mix or nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvx2_backbone.cli.main import main as cvx2_main

ROOT = Path(__file__).resolve().parents[2]
KILLER = ["-m", "tests.helpers.kill_while_writing"]  # SIGKILLs the command at a chosen moment
CVX2 = ["-m", "cvx2_backbone.cli.main"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The files a user sees (staging files and folders are hidden: `.NAME.tmpPID`)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, Path]:
    """Two different ConvNeXt V2 atto backbones: the one an earlier convert wrote, and the one converted now."""
    from cvx2_backbone import ConvNeXtV2

    root = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    torch.save(ConvNeXtV2(arch="atto").state_dict(), root / "old.pth")
    torch.save(ConvNeXtV2(arch="atto").state_dict(), root / "new.pth")
    return root / "old.pth", root / "new.pth"


@pytest.fixture
def hf_folder(weights, tmp_path) -> Path:
    """An earlier `cvx2 convert --to hf` output, in which the user has put files of their own."""
    pytest.importorskip("transformers")
    folder = tmp_path / "hf"
    assert cvx2_main(["convert", str(weights[0]), str(folder), "--to", "hf"]) == 0
    (folder / "notes.md").write_text("my notes")  # README.md is the model card convert writes (the license)
    (folder / "eval").mkdir()
    (folder / "eval" / "scores.json").write_text('{"top1": 0.5}')
    return folder


def test_convert_force_into_a_folder_replaces_its_own_files_and_keeps_the_users(weights, hf_folder):
    before = _snapshot(hf_folder)
    assert cvx2_main(["convert", str(weights[1]), str(hf_folder), "--to", "hf", "--force"]) == 0
    after = _snapshot(hf_folder)
    assert after["notes.md"] == b"my notes" and after["eval/scores.json"] == b'{"top1": 0.5}'  # before: deleted
    assert after["model.safetensors"] != before["model.safetensors"]  # the new weights
    assert json.loads(after["config.json"])["model_type"] == "convnextv2"
    assert set(after) == set(before)
    assert not list(hf_folder.parent.glob(".*"))  # no staging or old folder left


@pytest.mark.slow  # the killed commands run in fresh interpreters
@pytest.mark.parametrize("kill", [["config.json"], ["--at-rename", "hf"]], ids=["while-writing", "at-the-switch"])
def test_sigkill_during_convert_force_leaves_the_old_folder_or_the_new_one(weights, hf_folder, kill):
    before = _snapshot(hf_folder)
    killed = _run(*KILLER, *kill, "cvx2_backbone.cli.main", "convert", str(weights[1]), str(hf_folder), "--to", "hf",
                  "--force")
    after = _snapshot(hf_folder)
    if killed.returncode == 0:  # the switch is one system call here: no moment to kill it in between
        assert after["model.safetensors"] != before["model.safetensors"] and after["notes.md"] == b"my notes"
    else:
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert after == before
    assert set(after) == set(before)
    again = _run(*CVX2, "convert", str(weights[1]), str(hf_folder), "--to", "hf", "--force")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list(hf_folder.parent.glob(".*"))  # the killed run's staging folder is cleared


@pytest.mark.slow
def test_sigkill_during_convert_force_of_a_file_leaves_the_old_file(weights, tmp_path):
    out = tmp_path / "backbone.safetensors"
    assert cvx2_main(["convert", str(weights[0]), str(out)]) == 0
    before = out.read_bytes()
    killed = _run(*KILLER, "--at-rename", out.name, "cvx2_backbone.cli.main", "convert", str(weights[1]), str(out),
                  "--force")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert out.read_bytes() == before


@pytest.mark.slow
def test_sigkill_during_export_force_leaves_the_old_files(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    out = tmp_path / "m.onnx"
    argv = ["export", "-o", str(out), "--exporter", "torchscript", "--out-features", "stage4", "--openvino"]
    assert cvx2_main(argv) == 0
    before = _snapshot(tmp_path)
    assert set(before) == {"m.onnx", "m.xml", "m.bin"}
    for name in ("m.onnx", "m.bin", "m.xml"):  # killed just before each file of the new export is put in place
        killed = _run(*KILLER, "--at-rename", name, "cvx2_backbone.cli.main", *argv, "--force")
        assert killed.returncode == -9, killed.stderr[-3000:]
        # The files are renamed one by one; until the next writer there undoes it, a backup holds the earlier ones.
        capsys.readouterr()
        assert cvx2_main(["export", "-o", str(tmp_path / "other.onnx"), "--exporter", "torchscript",
                          "--out-features", "stage4", "--force"]) == 0
        assert "put back the earlier files of an export that was killed" in capsys.readouterr().out
        assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("other")} == before, name
        assert not list(tmp_path.glob(".*"))


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KB file system (a tmpfs), read-write or read-only: a full disk and a read-only one, for real."""
    mounted = []

    def mount(options: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64k,{options}", "tmpfs", str(where)],
                              capture_output=True)
        if done.returncode:
            pytest.skip("mounting a small tmpfs needs root")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("dst,to", [("backbone.safetensors", "cvx2"), ("backbone.pth", "cvx2"), ("hf", "hf")])
def test_convert_to_a_full_disk_names_the_space_needed_and_leaves_nothing(weights, small_disk, capsys, dst, to):
    """Issue 28 items 8 and 10: an internal error (torch: `unexpected pos 24832 vs 24752`) before."""
    disk = small_disk("rw")
    assert cvx2_main(["convert", str(weights[0]), str(disk / dst), "--to", to]) == 2
    err = capsys.readouterr().err
    assert f"cvx2 convert: error: no space left on device (it needs about 12.9 MB, 64.0 KB free there): " \
           f"{disk / dst}; free some space on that disk, or write somewhere else" in err
    assert "Traceback" not in err and not list(disk.iterdir())


def test_convert_to_a_read_only_disk_says_what_to_do(weights, small_disk, capsys):
    disk = small_disk("ro")
    assert cvx2_main(["convert", str(weights[0]), str(disk / "backbone.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"cvx2 convert: error: cannot write {disk}/backbone.safetensors: {disk} does not accept new files " \
           "(read-only file system); write to a folder you can write to, on a writable disk" in err
    assert "Traceback" not in err and not list(disk.iterdir())


def test_extract_rebuilds_a_damaged_cached_model_once(weights, tmp_path, monkeypatch, capsys):
    """Issue 28 item 8: a damaged model file in the engine cache failed every later `cvx2 extract` with a traceback."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    monkeypatch.setenv("CVX2_CACHE_DIR", str(tmp_path / "cache"))
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "a.png")

    def extract(out: str) -> str:
        assert cvx2_main(["extract", str(tmp_path / "a.png"), "-o", str(tmp_path / out), "--runtime", "onnxruntime",
                          "--device", "cpu", "--weights", str(weights[0])]) == 0
        assert (tmp_path / out / "a.safetensors").is_file()
        captured = capsys.readouterr()
        return captured.out + captured.err

    extract("first")
    (cached,) = (tmp_path / "cache" / "models").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 3])  # a copy cut short
    output = extract("second")
    assert f"note: the cached model {cached} was damaged (" in output and "exported it again" in output
    assert "Traceback" not in output
    assert "damaged" not in extract("third")  # said once: the entry is whole again
