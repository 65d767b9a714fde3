"""The error style of every command line (cvx2_backbone.usage): user mistakes print one message naming the problem
and the fix and exit 2 without a traceback; --debug adds it; internal errors keep it and exit 1.

The table holds the mistakes a new user made on main at e291c1a (issue 11), run through the real entry points.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

from cvx2_backbone.cli import main as cvx2_main  # noqa: E402
from cvx2_backbone.engine import test_main as tools_test, train_main as tools_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / "configs/convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py"
ENTRIES = {"cvx2": cvx2_main, "tools/train.py": tools_train, "tools/test.py": tools_test}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A demo config on a tiny synthetic set, a checkpoint written as the demo writes it, and foreign files."""
    import torchvision
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from PIL import Image

    from cvx2_backbone import ConvNeXtV2
    from cvx2_backbone.datasets import make_coco_shapes
    from cvx2_backbone.demo import QUICK, build_config

    root = tmp_path_factory.mktemp("errors")
    register_all_modules()
    data = make_coco_shapes(root / "data", num_train=2, num_val=2, image_size=64)
    cfg = build_config(data, QUICK, root / "work")
    cfg.dump(str(root / "config.py"))
    torch.manual_seed(0)
    detector = MODELS.build(cfg.model)
    torch.save({"meta": {}, "state_dict": detector.state_dict()}, root / "detector.pth")
    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18.pth")
    torch.save(ConvNeXtV2(arch="atto").state_dict(), root / "atto_backbone.pth")
    whole = (root / "detector.pth").read_bytes()
    (root / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    torch.save({"model": ConvNeXtV2(arch="atto").state_dict(), "x": _Calls(os.system, (f"touch {root}/pwned",))},
               root / "os_system.pth")
    Image.new("RGB", (64, 64), (120, 30, 200)).save(root / "image.png")
    return root


class _Calls:
    """Pickles as a call of ``function(*args)``: what a malicious checkpoint does."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def run_entry(entry: str, argv: list[str], capsys) -> tuple[int, str]:
    code = ENTRIES[entry](argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


LR = "lr-groups"
CASES = [
    # 1. weights of another model: an error before any work, naming what the file holds and what was expected
    ("tools/test.py", ["{root}/config.py", "{root}/resnet18.pth"],
     r"resnet18.pth does not fit the model: the file holds no ConvNeXt weights: a model with the modules conv1, bn1, "
     r"layer1.*the model is MaskRCNN with a ConvNeXt V2 atto backbone.*missing.*--allow-partial"),
    ("tools/test.py", ["{root}/config.py", "{root}/atto_backbone.pth"],
     r"the file holds ConvNeXt V2 atto weights .*no detector or segmentor parts.*These are backbone weights: to start "
     r"training from them, set model.backbone.init_cfg=dict\(type='Pretrained'"),
    ("tools/train.py", ["{root}/config.py", "--load-from", "{root}/resnet18.pth"],
     r"resnet18.pth does not fit the model"),
    ("tools/test.py", ["{root}/config.py", "{root}/missing.pth"], r"checkpoint '.*missing.pth' does not exist"),
    ("tools/train.py", ["{root}/config.py", "--resume", "{root}/truncated.pth"],
     r"truncated.pth is a corrupt or truncated torch checkpoint"),
    # 2. a pickle that would run os.system: a safety refusal naming the object, not "corrupt"
    ("cvx2", ["classify", "{root}/image.png", "--weights", "{root}/os_system.pth"],
     r"safety refusal, not a corrupt file.*os.system \(pickled as posix.system\).*CVX2_ALLOW_UNSAFE_PICKLE=1"),
    # 3. user mistakes that ended in tracebacks
    ("cvx2", ["info", "atto"], r"unknown model preset 'atto'; did you mean convnextv2_atto or convnext_atto\?"),
    ("cvx2", [LR, str(DET_CONFIG), "--cfg-options", "optim_wrapper.paramwise_cfg.decay_type=foo"],
     r"unknown decay_type 'foo'; choose one of \['layer_wise', 'stage_wise', 'block_wise'\]"),
    ("cvx2", [LR, str(DET_CONFIG), "--cfg-options", "optim_wrapper.paramwise_cfg.num_layers=2"],
     r"num_layers=2 is too small .*Use num_layers >= 5"),
    ("cvx2", [LR, "{root}/nope.py"], r"config file '.*nope.py' does not exist, here or under .*configs \(e.g. "),
    ("cvx2", [LR, str(ROOT / "setup.py")],
     r"cannot read .*setup.py as an mmengine config \(RuntimeError: no details\)"),
    ("cvx2", ["bench", "--sizes", "small"], r"unknown size 'small' in --sizes; choose from atto, femto"),
    ("cvx2", ["extract", "{root}/image.png", "-o", "{root}/feats", "--device", "cuda"],
     r"--device cuda: CUDA is not available on this machine.*use --device cpu"),
    ("cvx2", ["classify", "{root}/image.png", "--weights", "{root}/atto_backbone.pth", "--device", "cuda"],
     r"--device cuda: CUDA is not available"),
    ("cvx2", ["extract", "{root}/image.png", "-o", "{root}/feats", "--weights", "{root}/detector.pth", "--fpn", "128"],
     r"the FPN in .*detector.pth has 64 channels but 128 were asked for .*--fpn 64"),
]


@pytest.mark.parametrize("entry,argv,message", CASES,
                         ids=[" ".join([entry, *(Path(a).name for a in argv[:3])]) for entry, argv, _ in CASES])
def test_user_mistakes_exit_2_with_one_message_and_no_traceback(files, capsys, monkeypatch, entry, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    code, output = run_entry(entry, [a.format(root=files) for a in argv], capsys)
    assert code == 2, output[-3000:]
    assert re.search(message, output, re.DOTALL), output[-3000:]
    assert "Traceback" not in output
    prog = re.escape(entry)
    error_lines = [line for line in output.splitlines() if re.match(rf"^{prog}( [\w-]+)?: error: ", line)]
    assert len(error_lines) == 1, output[-3000:]
    assert not (files / "pwned").exists()  # the refused pickle never ran


def test_debug_shows_the_traceback_and_internal_errors_keep_it(capsys, monkeypatch):
    assert cvx2_main(["info", "atto", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err

    from cvx2_backbone.commands import info

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(info, "run", broken)
    assert cvx2_main(["info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "cvx2 info: internal error" in err


def test_the_demo_config_evaluates_with_tools_test(files, capsys):
    code, output = run_entry("tools/test.py", [str(files / "config.py"), str(files / "detector.pth"),
                                               "--work-dir", str(files / "test_work")], capsys)
    assert code == 0, output[-3000:]
    metrics = re.search(r"^metrics: (.*)$", output, re.MULTILINE)
    assert metrics and '"coco/bbox_mAP"' in metrics.group(1) and '"coco/segm_mAP"' in metrics.group(1)


def test_the_tool_script_prints_no_traceback(files):
    """The same from a shell: `python tools/test.py CONFIG other_model.pth` (the cvx2 console script is cli.main)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tools/test.py", str(files / "config.py"), str(files / "resnet18.pth"),
                           "--work-dir", str(files / "subprocess_work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "tools/test.py: error: " in proc.stderr and "does not fit the model" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_help_texts_show_defaults_once_and_only_where_they_inform(capsys):
    for command in ("extract", "bench", "classify", "demo"):
        with pytest.raises(SystemExit):
            cvx2_main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: False)" not in text, command
        assert "(default: True)" not in text, command  # --no-memory: its default is to measure memory
        assert not re.search(r"\(default: [^)]*\) \(default:", text), command
    with pytest.raises(SystemExit):
        cvx2_main(["extract", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "timm/model.tag (default: random init) --allow-partial" in text and "(default: float32)" in text
