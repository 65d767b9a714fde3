"""`cvx2 extract`, `cvx2 classify` and `cvx2 info` end to end, through the real command line entry."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvx2_backbone import ConvNeXtV2
from cvx2_backbone.cli.main import main
from cvx2_backbone.extraction.classifier import Classifier, classifier_input
from cvx2_backbone.extraction.feature_files import load_features
from cvx2_backbone.cli.commands.info import describe
from cvx2_backbone.utils.pictures import LABEL_HEIGHT, TILE_GAP

ROOT = Path(__file__).resolve().parents[2]

# The paper's ImageNet-1K classifier sizes (millions of parameters, GFLOPs as MACs at 224).
PAPER = {
    "convnextv2_atto": (3.7, 0.55), "convnextv2_femto": (5.2, 0.78), "convnextv2_pico": (9.1, 1.37),
    "convnextv2_nano": (15.6, 2.45), "convnextv2_tiny": (28.6, 4.47), "convnextv2_base": (89, 15.4),
    "convnextv2_large": (198, 34.4), "convnextv2_huge": (660, 115),
    "convnext_tiny": (28.6, 4.5), "convnext_small": (50.2, 8.7), "convnext_base": (88.6, 15.4),
    "convnext_large": (197.8, 34.4), "convnext_xlarge": (350.2, 60.9),
}


def save_image(path, height, width, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    save_image(folder / "a.png", 64, 96, 0)
    save_image(folder / "b.png", 64, 96, 1)
    save_image(folder / "nested" / "c.jpg", 80, 48, 2)
    folder.joinpath("broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    folder.joinpath("notes.txt").write_text("not an image, not even tried")
    return folder


def test_extract_folder_writes_files_and_lists_the_broken_one(image_folder, tmp_path, capsys):
    out = tmp_path / "features"
    code = main(["extract", str(image_folder), "-o", str(out), "--out-features", "stem,stage2,stage4",
                 "--batch-size", "2"])
    printed = capsys.readouterr().out
    assert code == 1  # documented: 1 when some inputs were unreadable
    assert "skipped 1 unreadable input(s)" in printed and "broken.jpg" in printed.split("skipped 1")[-1]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.safetensors", "b.safetensors", "nested/c.safetensors"]
    features, meta = load_features(out / "nested" / "c.safetensors")
    assert meta["outputs"] == ["stem", "stage2", "stage4"] and meta["strides"] == [4, 8, 32]
    assert meta["input_size"] == [80, 48] and meta["original_size"] == [80, 48] and meta["padded_size"] == [96, 64]
    assert meta["source"].endswith("c.jpg") and meta["model"] == "convnextv2_atto"
    assert {k: v.shape for k, v in features.items()} == {"stem": (40, 20, 12), "stage2": (80, 10, 6),
                                                        "stage4": (320, 3, 2)}
    assert features["stem"].dtype == np.float32 and np.isfinite(features["stage4"]).all()

    # Rerunning keeps what exists; --overwrite redoes it.
    before = (out / "a.safetensors").stat().st_mtime_ns
    assert main(["extract", str(image_folder), "-o", str(out), "--out-features", "stem,stage2,stage4"]) == 1
    assert "3 of 4 images already have outputs" in capsys.readouterr().out
    assert (out / "a.safetensors").stat().st_mtime_ns == before
    assert main(["extract", str(image_folder / "a.png"), "-o", str(out), "--overwrite"]) == 0
    assert (out / "a.safetensors").stat().st_mtime_ns != before
    assert not list(out.rglob(".*tmp*"))  # no temporary files left behind


def test_extract_interrupt_keeps_finished_files_and_resumes(image_folder, tmp_path, monkeypatch, capsys):
    from cvx2_backbone.cli.commands import extract

    encode = extract.encode_features
    calls = []

    def interrupted_on_second_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(*args, **kwargs)

    monkeypatch.setattr(extract, "encode_features", interrupted_on_second_image)
    out = tmp_path / "out"
    assert main(["extract", str(image_folder), "-o", str(out), "--batch-size", "1"]) == 130
    assert "interrupted by SIGINT: 1 images written" in capsys.readouterr().out
    first = [p for p in out.rglob("*") if p.is_file()]
    assert len(first) == 1 and load_features(first[0])[1]["outputs"]  # complete and readable
    monkeypatch.setattr(extract, "encode_features", encode)
    assert main(["extract", str(image_folder), "-o", str(out)]) == 1  # resumes; the broken file stays skipped
    assert "1 of 4 images already have outputs" in capsys.readouterr().out
    assert len(list(out.rglob("*.safetensors"))) == 3 and not list(out.rglob(".*"))


def test_extract_npz_fp16_with_resize(image_folder, tmp_path):
    out = tmp_path / "npz"
    assert main(["extract", str(image_folder / "b.png"), "-o", str(out), "--format", "npz", "--dtype", "float16",
                 "--shortest-edge", "32"]) == 0
    features, meta = load_features(out / "b.npz")
    assert meta["input_size"] == [32, 48] and meta["original_size"] == [64, 96] and meta["shortest_edge"] == 32
    assert features["stage1"].dtype == np.float16 and features["stage1"].shape == (40, 8, 12)
    assert list(features) == meta["outputs"] == ["stage1", "stage2", "stage3", "stage4"]


def test_extract_with_weights_reproduces_the_api(image_folder, tmp_path):
    from cvx2_backbone.extraction.extractor import FeatureExtractor

    torch.manual_seed(3)
    model = ConvNeXtV2(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32]))
    weights = tmp_path / "tiny.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, weights)
    out = tmp_path / "out"
    assert main(["extract", str(image_folder / "nested"), "-o", str(out), "--weights", str(weights)]) == 0
    features, meta = load_features(out / "c.safetensors")
    assert meta["channels"] == [8, 16, 24, 32] and meta["weights"] == str(weights)
    expected = FeatureExtractor(None, weights).extract_each(image_folder / "nested" / "c.jpg")[0]
    for name, value in expected.items():
        np.testing.assert_allclose(features[name], value.numpy(), atol=1e-5, rtol=1e-4)


def test_extract_viz_picture_has_the_documented_layout(image_folder, tmp_path):
    out = tmp_path / "viz"
    assert main(["extract", str(image_folder / "nested" / "c.jpg"), "-o", str(out), "--viz", "--viz-tile", "100",
                 "--fpn", "16"]) == 0
    picture = Image.open(out / "c.pyramid.png")
    levels = 5  # p2..p6
    tile_h, tile_w = 100, round(48 * 100 / 80)
    assert picture.size == ((levels + 1) * tile_w + levels * TILE_GAP, tile_h + LABEL_HEIGHT)
    pixels = np.asarray(picture)
    gap = pixels[LABEL_HEIGHT:, tile_w:tile_w + TILE_GAP]
    assert (gap == 255).all()  # white gaps between tiles
    assert pixels[LABEL_HEIGHT:, -tile_w:].std() > 0  # the last level is drawn, not blank
    _, meta = load_features(out / "c.safetensors")
    assert meta["outputs"] == ["p2", "p3", "p4", "p5", "p6"] and meta["strides"] == [4, 8, 16, 32, 64]


def test_extract_usage_errors(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["extract", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    save_image(tmp_path / "x" / "same.png", 40, 40, 0)
    save_image(tmp_path / "x" / "same.jpg", 40, 40, 1)
    assert main(["extract", str(tmp_path / "x"), "-o", str(tmp_path / "o")]) == 2
    assert "would both write" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "x" / "same.png"), "-o", str(tmp_path / "o"),
                 "--out-features", "stage9"]) == 2
    assert "unknown name" in capsys.readouterr().err


def test_info_matches_the_paper():
    for preset, (params, gflops) in PAPER.items():
        info = describe(preset)
        assert info["params"] / 1e6 == pytest.approx(params, rel=0.01), preset
        assert info["gmacs"] == pytest.approx(gflops, rel=0.02), preset


def test_info_prints_outputs_table(capsys):
    assert main(["info", "convnextv2_atto", "--image-size", "256"]) == 0
    printed = capsys.readouterr().out
    assert "3.71" in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.startswith(("stem", "stage"))}
    assert rows["stem"] == ["40", "4", "64x64"] and rows["stage4"] == ["320", "32", "8x8"]
    assert main(["info", "convnext_small", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)[0]
    assert described["depths"] == [3, 3, 27, 3] and described["outputs"][2]["channels"] == 192


def test_classify_keeps_the_checkpoint_head_like_timm(tmp_path, capsys):
    import timm
    from timm.data import ImageNetInfo

    torch.manual_seed(4)
    reference = timm.create_model("convnextv2_atto", pretrained=False).eval()
    with torch.no_grad():
        reference.head.fc.bias[123] = 6.0  # make one class win clearly
    weights = tmp_path / "timm_atto.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    image = tmp_path / "cat.png"
    save_image(image, 120, 160, 5)

    classifier = Classifier(str(weights))
    pixels = classifier_input(image, 224, 0.875)[None]
    assert pixels.shape == (1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(classifier(pixels), reference(pixels).softmax(-1), atol=1e-5, rtol=1e-4)

    assert main(["classify", str(image), "--weights", str(weights)]) == 0
    ranked = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip()[:2] in
              {"1.", "2.", "3.", "4.", "5."}]
    assert len(ranked) == 5
    assert ranked[0].split()[2] == "123" and ranked[0].endswith(ImageNetInfo().index_to_description(123))


def test_classify_refuses_backbone_only_weights(tmp_path, capsys):
    weights = tmp_path / "backbone.pth"
    torch.save(ConvNeXtV2(arch=dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])).state_dict(), weights)
    save_image(tmp_path / "x.png", 40, 40, 0)
    assert main(["classify", str(tmp_path / "x.png"), "--weights", str(weights)]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_extract_sigterm_stops_cleanly_and_a_rerun_continues(tmp_path, capsys):
    """A real process and a real SIGTERM: a message and exit 143, only whole files written, the rerun completes."""
    folder, out = tmp_path / "images", tmp_path / "features"
    count = 30
    for index in range(count):
        save_image(folder / f"{index:03d}.png", 320, 320, index)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cvx2_backbone.cli.main", "extract", str(folder), "-o", str(out),
                             "--batch-size", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.safetensors"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout + stderr
    written = sorted(out.glob("*.safetensors"))
    assert f"interrupted by SIGTERM: {len(written)} images written" in stdout and "Traceback" not in stderr
    assert 2 <= len(written) < count and not list(out.glob(".*"))  # no temporary files left
    for path in written:
        assert load_features(path)[1]["outputs"] == ["stage1", "stage2", "stage3", "stage4"]  # each one whole

    assert main(["extract", str(folder), "-o", str(out), "--batch-size", "8"]) == 0
    assert f"{len(written)} of {count} images already have outputs" in capsys.readouterr().out
    assert len(list(out.glob("*.safetensors"))) == count


def test_extract_removes_stale_temporaries_and_never_reads_its_output(tmp_path, capsys):
    folder = tmp_path / "images"
    save_image(folder / "a.png", 64, 64, 0)
    save_image(folder / "sub" / "b.png", 64, 64, 1)
    out = folder / "feats"  # inside the input folder
    out.mkdir()
    stale = out / ".a.safetensors.tmp4194999"  # a killed run's (no such process)
    stale.write_bytes(b"half a file")
    live = out / f".b.safetensors.tmp{os.getppid()}"  # another running process's: not touched
    live.write_bytes(b"being written")
    for _ in range(2):
        assert main(["extract", str(folder), "-o", str(out), "--viz"]) == 0
    printed = capsys.readouterr().out
    assert "removed 1 temporary file(s) that an interrupted run left" in printed
    assert "2 of 2 images already have outputs" in printed  # the second run: its own pictures are no input
    assert not stale.exists() and live.exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p != live) == [
        "a.pyramid.png", "a.safetensors", "sub/b.pyramid.png", "sub/b.safetensors"]
