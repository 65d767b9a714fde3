"""tools/gpu_check.sh, the prepared device run: what can be checked without a GPU (syntax, options, the dry run)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvx2_backbone.benchmark.options import GPU_CHECK_CASES, Case

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
WHEELS = ("mmengine-0.10.7", "addict-2.4.0", "termcolor-3.3.0", "yapf-0.43.0", "platformdirs-4.14.9")


def _run(*args: str, wheel_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, WHEEL_DIR=str(wheel_dir), OUT=str(out))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_gpu_check_cases_cover_issue_30():
    cases = [Case.parse(name) for name in GPU_CHECK_CASES]
    compiled = {(c.precision, c.shape) for c in cases if c.compiled}
    assert {(p, s) for p in ("bf16", "fp16") for s in ((64, 224, 224), (1, 800, 1216))} <= compiled
    assert {c.cp_granularity for c in cases if c.checkpointing} == {"block", "stage"}
    assert any(c.task == "train" and not c.checkpointing for c in cases)


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    for name in WHEELS:
        (wheels / f"{name}-py3-none-any.whl").touch()
    result = _run("--dry-run", wheel_dir=wheels, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pytest -m gpu" in out and "tests/models/test_gpu.py" in out and "tests/models/test_compile.py" in out
    for shape in ("64x224", "1x1024", "1x800x1216"):  # one bench run per input shape, every case in one of them
        assert f"bench-{shape} (limit" in out and f"bench-{shape}.json" in out
    assert all(name in out for name in GPU_CHECK_CASES)
    assert "--device cuda" in out and "tools/dwconv_layout.py" in out and "tools/compile_profile.py" in out
    assert "dry run: nothing ran" in out and not any((tmp_path / "out").glob("*.log"))


def test_missing_wheels_stop_it_with_the_fix(tmp_path):
    (tmp_path / "whl").mkdir()
    result = _run("--dry-run", wheel_dir=tmp_path / "whl", out=tmp_path / "out")
    assert result.returncode == 2 and "missing wheels" in result.stderr and "mmengine" in result.stderr
    assert "pip download command" in result.stderr


@pytest.mark.parametrize("option", ["--bogus", "--no-such"])
def test_unknown_options_are_refused(option, tmp_path):
    result = _run(option, wheel_dir=tmp_path, out=tmp_path / "out")
    assert result.returncode == 2 and "unknown option" in result.stderr
