"""The error style of every command line (cvx2_backbone.utils.usage): user mistakes print one message naming the problem
and the fix and exit 2 without a traceback; --debug adds it; internal errors keep it and exit 1.

The table holds the mistakes a new user made on main at e291c1a (issue 11) and f4da057 (issue 19), run through the
real entry points; the tools' cases also check that a refused run leaves no <work_dir>/<timestamp>/ folder.
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

from cvx2_backbone.cli.main import main as cvx2_main  # noqa: E402
from cvx2_backbone.cli.train_test import test_main as tools_test, train_main as tools_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
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
    from cvx2_backbone.cli.demo_job import QUICK, build_config

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
    (root / "afile.txt").write_text("not a folder")
    (root / "existing.onnx").write_bytes(b"an earlier export")
    (root / "hf_model").mkdir()
    (root / "hf_model" / "config.json").write_text('{"model_type": "convnextv2"}')
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
    # 4. issue 19: config mistakes through the tools are usage errors, and leave no timestamped folder
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "model.backbone.arch=atom"],
     r"the config does not build: .*unknown ConvNeXtV2 arch 'atom'; choose one of \['atto'.*--cfg-options"),
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "model.backbone.out_indices=5"],
     r"the config does not build: .*out_indices.*5"),
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "model.backbone.out_indice=0,1"],
     r"the config does not build: .*unexpected keyword argument 'out_indice'"),
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "train_cfg.max_iter=5"],
     r"the config does not build: .*IterBasedTrainLoop.*unexpected keyword argument 'max_iter'"),
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "model.backbone.arch=convnextv2_tiny"],
     r"'convnextv2_tiny' is a preset name of the cvx2 command line .* in a config it is "
     r"type='cvx2_backbone.ConvNeXtV2', arch='tiny'"),
    ("tools/test.py", ["{root}/config.py", "{root}/detector.pth", "--cfg-options", "model.backbone.arch=atom"],
     r"the config does not build: .*unknown ConvNeXtV2 arch 'atom'"),
    # 5. issue 19: misleading messages now name the real problem and the command's own fix
    ("cvx2", ["export", "-o", "{root}/existing.onnx"], r"existing.onnx exists; pass --force to replace"),
    ("cvx2", ["export", "-o", "/proc/cvx2-test/x.onnx"],
     r"cannot write /proc/cvx2-test/x.onnx: /proc does not accept new files \(.*\); choose a file path"),
    ("cvx2", ["extract", "{root}/image.png", "-o", "{root}/afile.txt"],
     r"-o .*afile.txt is a file; -o takes a folder"),
    ("cvx2", ["extract", "{root}/image.png", "-o", "/proc/cvx2-test-features"],
     r"cannot write into -o /proc/cvx2-test-features: /proc does not accept new files"),
    ("cvx2", ["convert", "{root}/atto_backbone.pth", "{root}/converted.onnx"],
     r"cvx2 convert writes .safetensors or a torch file \(.pth, .pt, .bin, .ckpt\), not .onnx \(an ONNX file is "
     r"what `cvx2 export` writes\)"),
    ("cvx2", ["fcmae-show", "{root}/image.png", "--checkpoint", "{root}/resnet18.pth", "-o", "{root}/show"],
     r"resnet18.pth is not an FCMAE checkpoint \(no mask token or decoder; its first keys: bn1.bias"),
    ("cvx2", ["extract", "{root}/image.png", "-o", "{root}/feats", "--model", "convnext_atto", "--weights",
              "{root}/atto_backbone.pth"],
     r"--weights .*atto_backbone.pth do not fit --model convnext_atto: they are ConvNeXt V2 atto weights; leave "
     r"--model out \(it is read from the weights\) or pass --model convnextv2_atto"),
    ("cvx2", ["classify", "{root}/image.png", "--weights", "{root}/atto_backbone.pth", "--top-k", "0"],
     r"--top-k 0: give at least 1"),
    ("cvx2", ["classify", "{root}/image.png", "--weights", "{root}/atto_backbone.pth", "--crop-pct", "1.5"],
     r"--crop-pct 1.5 is not a fraction in \(0, 1\]"),
    ("cvx2", ["info", "convnextv2_atto", "--num-classes", "-1"], r"--num-classes -1: give 0 \(no head\) or more"),
    ("cvx2", ["demo", "--iters", "0"], r"--iters 0: give 1 or more"),
    # 6. issue 28 item 8: tracebacks ("internal error") for user mistakes
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "model.neck.in_channels=[40,80,160]"],
     r"model.neck.in_channels=\[40, 80, 160\] does not match the backbone's outputs: model.backbone gives "
     r"out_channels \[40, 80, 160, 320\] \(4 levels, out_indices=\[0, 1, 2, 3\]\); set "
     r"model.neck.in_channels=\[40, 80, 160, 320\], or change model.backbone.out_indices"),
    ("tools/train.py", ["{root}/config.py", "--cfg-options", "model.backbone.out_indices=[1,2,3]"],
     r"model.neck.in_channels=\[40, 80, 160, 320\] does not match .* gives out_channels \[80, 160, 320\]"),
    ("cvx2", ["fcmae-show", "{root}/image.png", "--checkpoint", "{root}/os_system.pth", "-o", "{root}/show"],
     r"safety refusal, not a corrupt file.*os.system"),
]


@pytest.mark.parametrize("entry,argv,message", CASES,
                         ids=[" ".join([entry, *(Path(a).name for a in argv[:3])]) for entry, argv, _ in CASES])
def test_user_mistakes_exit_2_with_one_message_and_no_traceback(files, capsys, monkeypatch, entry, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    argv = [a.format(root=files) for a in argv]
    work_dir = files / f"work_{abs(hash(tuple(argv)))}"
    if entry.startswith("tools/"):
        # A config of its own per case: mmengine keeps one logger and visualizer per config name and second, and
        # reuses them (with the removed folder of the previous refused run) when the next case starts that second.
        config = files / f"config_{work_dir.name}.py"
        config.write_text((files / "config.py").read_text())
        argv = [str(config) if a == str(files / "config.py") else a for a in argv] + ["--work-dir", str(work_dir)]
    code, output = run_entry(entry, argv, capsys)
    assert code == 2, output[-3000:]
    assert re.search(message, output, re.DOTALL), output[-3000:]
    assert "Traceback" not in output
    prog = re.escape(entry)
    error_lines = [line for line in output.splitlines() if re.match(rf"^{prog}( [\w-]+)?: error: ", line)]
    assert len(error_lines) == 1, output[-3000:]
    assert not (files / "pwned").exists()  # the refused pickle never ran
    assert not work_dir.exists(), sorted(work_dir.rglob("*"))  # no <work_dir>/<timestamp>/ of the refused run
    assert not list(files.glob(".*.tmp*")) and not list(files.glob("*/.*.tmp*"))  # no staging files


@pytest.mark.parametrize("entry,argv", [("tools/train.py", ["{root}/config.py", "--cfg-options", "foo"]),
                                        ("cvx2", [LR, str(DET_CONFIG), "--cfg-options", "foo"]),
                                        ("tools/test.py", ["{root}/config.py", "x.pth", "--cfg-options", "=1"])])
def test_a_cfg_option_without_a_value_is_a_usage_error(files, capsys, entry, argv):
    """Issue 28 item 8: mmengine's DictAction ended in `ValueError: not enough values to unpack` with a traceback."""
    argv = [a.format(root=files) for a in argv]
    with pytest.raises(SystemExit) as stopped:
        ENTRIES[entry](argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(rf"^{re.escape(entry)}( lr-groups)?: error: --cfg-options '(foo|=1)': each override is KEY=VALUE, "
                     r"e.g. train_dataloader.batch_size=2", err, re.MULTILINE), err


def test_debug_shows_the_traceback_and_internal_errors_keep_it(capsys, monkeypatch):
    assert cvx2_main(["info", "atto", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err

    from cvx2_backbone.cli.commands import info

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


# --- issue 19: a CLI that answers at once, right answers instead of silent wrong ones, no loss, no leftovers -----

def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env))


LIGHT_HELP = ("extract", "classify", "info", "convert", "export", "lr-groups", "bench", "demo", "fcmae-show")


def test_help_answers_without_importing_torch_and_without_warnings():
    """`cvx2 --help` and `cvx2 SUB --help`, checked from inside the process: torch is never imported."""
    proc = _python(
        "import sys\n"
        "from cvx2_backbone.cli.main import main\n"
        f"for argv in [['--help']] + [[name, '--help'] for name in {LIGHT_HELP!r}]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, argv\n"
        "    print('TORCH' if 'torch' in sys.modules else 'light', *argv, file=sys.stderr)\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert lines == [f"light {' '.join(argv)}" for argv in [["--help"]] + [[name, "--help"] for name in LIGHT_HELP]]
    assert "usage: cvx2 extract" in proc.stdout and "--weights" in proc.stdout  # the subcommands' own arguments


def test_the_package_registers_lazily_for_configs():
    """`custom_imports=['cvx2_backbone']` then `type='cvx2_backbone.ConvNeXtV2'` and the unprefixed layer-decay
    constructor, in a fresh process: the lazy package still builds both (through mmdet's registries)."""
    proc = _python(
        "import sys, cvx2_backbone\n"
        "assert 'torch' not in sys.modules\n"
        "from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS\n"
        "from mmengine.registry import DefaultScope\n"
        "with DefaultScope.overwrite_default_scope('mmdet'):\n"
        "    backbone = MODELS.build(dict(type='cvx2_backbone.ConvNeXtV2', arch='atto'))\n"
        "    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type='ConvNeXtLayerDecayOptimizerConstructor',\n"
        "        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4)),\n"
        "        paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6)))\n"
        "    wrapper = constructor(backbone)\n"
        "from cvx2_backbone.engine.optimizers import ConvNeXtLayerDecayOptimizerConstructor as C\n"
        "assert type(constructor) is C\n"
        "assert OPTIM_WRAPPER_CONSTRUCTORS.get('ConvNeXtLayerDecayOptimizerConstructor') is C\n"
        "print('built', type(backbone).__name__, len(wrapper.optimizer.param_groups) > 1)\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "built ConvNeXtV2 True"


def test_lr_groups_gives_no_deprecation_warnings(capsys):
    """mmengine reloads pkg_resources for every `mmdet::` base config; main printed five warnings per call."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cvx2_main(["lr-groups", str(DET_CONFIG)]) == 0
    assert "Layer-wise lr decay" in capsys.readouterr().out  # the table was printed
    assert [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, UserWarning))
            and "deprecated" in str(w.message)] == []


@pytest.mark.heavy  # two torchrun workers importing the training stack: 15-40 s on 2 cores
def test_dist_train_prints_one_message_and_exits_2(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHON=sys.executable,
               PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(["bash", "tools/dist_train.sh", str(tmp_path / "nope.py"), "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert output.count("tools/train.py: error: config file") == 1, output[-3000:]
    assert "Traceback" not in output and "ChildFailedError" not in output


def test_extract_never_reads_its_own_pictures_and_reads_a_repeated_file_once(files, tmp_path, capsys):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200)]):
        Image.new("RGB", (64, 48), colour).save(photos / f"p{i}.png")
    assert cvx2_main(["extract", str(photos), "-o", str(photos / "feats"), "--viz", "--viz-tile", "32"]) == 0
    assert len(list((photos / "feats").glob("*.pyramid.png"))) == 3
    (photos / "copied.pyramid.png").write_bytes((photos / "feats" / "p0.pyramid.png").read_bytes())
    capsys.readouterr()
    assert cvx2_main(["extract", str(photos), str(photos / "p0.png"), "-o", str(photos / "feats2")]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (photos / "feats2").iterdir()) == [f"p{i}.safetensors" for i in range(3)]
    assert "wrote 3 feature files" in out and "random weights" in out


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_convert_follows_the_umask_and_clears_its_stale_staging_files(files, tmp_path, capsys):
    out = tmp_path / "atto.safetensors"
    stale = tmp_path / f".atto.safetensors.tmp{_dead_pid()}"
    stale.write_bytes(b"half a file")
    foreign = tmp_path / f".notes.txt.tmp{_dead_pid()}"  # not a name convert writes: left alone
    foreign.write_bytes(b"someone else's")
    previous = os.umask(0o027)
    try:
        assert cvx2_main(["convert", str(files / "atto_backbone.pth"), str(out)]) == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o640
    assert not stale.exists() and foreign.exists()
    assert cvx2_main(["convert", str(files / "atto_backbone.pth"), str(out)]) == 2  # exists, no --force
    assert "pass --force" in capsys.readouterr().err


def test_export_needs_force_and_clears_stale_staging_folders(tmp_path, capsys):
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    stale = tmp_path / f".m.onnx.tmp{_dead_pid()}"
    stale.mkdir()
    (stale / "m.onnx").write_bytes(b"x" * 1000)
    argv = ["export", "-o", str(out), "--exporter", "torchscript", "--out-features", "stage4"]
    previous = os.umask(0o022)
    try:
        assert cvx2_main(argv) == 0
    finally:
        os.umask(previous)
    assert not stale.exists() and out.stat().st_mode & 0o777 == 0o644
    written = out.read_bytes()
    capsys.readouterr()
    assert cvx2_main(argv) == 2
    assert f"{out} exists; pass --force to replace" in capsys.readouterr().err
    assert out.read_bytes() == written and not list(tmp_path.glob(".*.tmp*"))


def test_classify_says_when_the_head_looks_untrained_and_extract_when_an_image_is_tiny(files, tmp_path, capsys):
    from PIL import Image

    from cvx2_backbone import ConvNeXtV2

    state = ConvNeXtV2(arch="atto").state_dict()
    state.update({"norm.weight": torch.ones(320), "norm.bias": torch.zeros(320),
                  "head.weight": torch.zeros(1000, 320), "head.bias": torch.zeros(1000)})  # every class 0.1%
    torch.save(state, tmp_path / "untrained.pth")
    assert cvx2_main(["classify", str(files / "image.png"), "--weights", str(tmp_path / "untrained.pth"),
                      "--device", "cpu"]) == 0
    assert "the top class has 0.10%, close to 1/1000: the head looks untrained" in capsys.readouterr().out
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "dot.png")
    assert cvx2_main(["extract", str(tmp_path / "dot.png"), "-o", str(tmp_path / "feats"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "dot.png is 1x1, smaller than the stride 32: its maps mostly describe the padding" in captured.out + \
        captured.err


def test_classify_says_when_the_head_was_never_trained(tmp_path, files, capsys):
    """Issue 28 item 7: a model saved before fine-tuning (timm's convnextv2_atto: backbone weights with the head's
    initial values) printed ImageNet labels with confident-looking percentages and no note."""
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("convnextv2_atto").state_dict(), tmp_path / "timm_atto.pth")
    assert cvx2_main(["classify", str(files / "image.png"), "--weights", str(tmp_path / "timm_atto.pth"),
                      "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"note: the classification head in {tmp_path / 'timm_atto.pth'} is untrained (its bias is all zeros, as " \
           "a freshly initialised head's): the classes below are not predictions" in out
    assert out.index("is untrained") < out.index("  1. ")  # said before the classes


REFUSED_UP_FRONT = [  # issue 28 item 9: misleading messages, or refusals that came after minutes of work
    ("tools/test.py", ["{root}/config.py", "{root}/hf_model", "--work-dir", "{out}"],
     r"checkpoint .*hf_model is a folder \(a Hugging Face model folder\), not a training checkpoint; pass the .pth "
     r"file tools/train.py wrote, .* model.backbone.init_cfg=dict\(type='Pretrained', checkpoint='.*hf_model'\)"),
    ("cvx2", ["demo", "--min-ap", "1.5", "-o", "{out}"],
     r"--min-ap 1.5: COCO AP is a fraction in \[0, 1\], so the run could never pass; give a value below 1"),
    ("cvx2", ["fcmae-show", "{root}/image.png", "--size", "7", "-o", "{out}"],
     r"--size 7: the picture is cut into 32-pixel patches, so give a multiple of 32 \(e.g. 32, or 224\)"),
    ("cvx2", ["fcmae-show", "{root}/image.png", "--iters", "0", "-o", "{out}"], r"--iters must be >= 1, got 0"),
    ("cvx2", ["bench", "--json", "/proc/cvx2-test/b.json"],
     r"--json /proc/cvx2-test/b.json: cannot write there \(/proc does not accept new files"),
]


@pytest.mark.parametrize("entry,argv,message", REFUSED_UP_FRONT,
                         ids=[" ".join([entry, *argv[:2]]) for entry, argv, _ in REFUSED_UP_FRONT])
def test_refusals_come_first_and_leave_no_output(files, tmp_path, capsys, entry, argv, message):
    out = tmp_path / "out"
    code, output = run_entry(entry, [a.format(root=files, out=out) for a in argv], capsys)
    assert code == 2, output[-3000:]
    assert re.search(message, output), output[-3000:]
    assert "Traceback" not in output and not out.exists()


def test_classify_takes_a_folder_of_images(files, tmp_path, capsys):
    """Issue 28 item 9: `cvx2 classify FOLDER` said "image file not found"."""
    from PIL import Image

    torch.manual_seed(0)
    state = _state_with_head()
    torch.save(state, tmp_path / "classifier.pth")
    (tmp_path / "photos" / "more").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "photos" / "red.png")
    Image.new("RGB", (64, 64), (10, 10, 200)).save(tmp_path / "photos" / "more" / "blue.jpg")
    assert cvx2_main(["classify", str(tmp_path / "photos"), "--weights", str(tmp_path / "classifier.pth"),
                      "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"\n{tmp_path / 'photos' / 'more' / 'blue.jpg'}\n  1. " in out
    assert f"\n{tmp_path / 'photos' / 'red.png'}\n  1. " in out
    (tmp_path / "empty").mkdir()
    assert cvx2_main(["classify", str(tmp_path / "empty"), "--weights", str(tmp_path / "classifier.pth")]) == 2
    assert "no images in" in capsys.readouterr().err


def _state_with_head() -> dict:
    from cvx2_backbone import ConvNeXtV2

    state = ConvNeXtV2(arch="atto").state_dict()
    state.update({"norm.weight": torch.rand(320) + 0.5, "norm.bias": torch.randn(320),
                  "head.weight": torch.randn(1000, 320), "head.bias": torch.randn(1000)})
    return state


def test_cvx2_without_a_command_lists_the_commands(capsys):
    """Issue 28 item 10: argparse's one line ("the following arguments are required: COMMAND") before."""
    from cvx2_backbone.cli.main import COMMANDS

    assert cvx2_main([]) == 2
    err = capsys.readouterr().err
    assert "cvx2: error: give a command:" in err and "see `cvx2 COMMAND --help` for its options" in err
    for name in COMMANDS:
        assert re.search(rf"^  {re.escape(name)} +\S", err, re.MULTILINE), name
