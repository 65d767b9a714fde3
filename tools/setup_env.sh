#!/usr/bin/env bash
# Install the tested stack and this package (editable, with test extras) into a virtual environment.
#
# Uses the active virtual environment if there is one, otherwise creates ./.venv.
# Safe to re-run: packages already present in a compatible version are kept, so an
# environment that already works (for example with a CUDA build of torch) is not replaced.
# mmcv 2.1.0 has no wheel for current torch: it is built from source with its C++ ops
# (about 10 minutes on 2 cores, then cached). With a GPU and nvcc present the CUDA ops are
# built too (set CVX2_MMCV_CUDA=0 or 1 to decide yourself).
#
# CVX2_STACK picks the OpenMMLab stack: `upstream` (default; mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0, mmseg 1.2.2,
# requirements/constraints.txt, ./.venv) or `onedl`, the maintained forks (onedl-mmengine, onedl-mmcv,
# onedl-mmdetection, onedl-mmsegmentation; requirements/constraints-onedl.txt, ./.venv-onedl). The forks install the
# same modules under other distribution names, so the two never share an environment; onedl-mmcv is source-only and
# built and cached like mmcv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STACK=${CVX2_STACK:-upstream}
case $STACK in
  upstream) CONSTRAINTS="$ROOT/requirements/constraints.txt"; VENV_DIR=.venv
            MMCV_DIST=mmcv; MMCV_VERSION=2.1.0; MMCV_SPEC=">=2.0,<2.2" ;;
  onedl)    CONSTRAINTS="$ROOT/requirements/constraints-onedl.txt"; VENV_DIR=.venv-onedl
            MMCV_DIST=onedl-mmcv; MMCV_VERSION=2.3.6; MMCV_SPEC="==2.3.6" ;;
  *) echo "[setup] CVX2_STACK must be upstream or onedl, not '$STACK'" >&2; exit 2 ;;
esac
MMCV_FILE=${MMCV_DIST//-/_}-$MMCV_VERSION  # the sdist's and the wheel's name

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
  echo "[setup] using the active virtual environment $VIRTUAL_ENV ($STACK stack)"
else
  if [[ ! -x $VENV_DIR/bin/python ]]; then
    echo "[setup] creating $VENV_DIR ($STACK stack)"
    python3 -m venv "$VENV_DIR"
  fi
  PY="$ROOT/$VENV_DIR/bin/python"
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check "$@"; }
has() { "$PY" - "$@" <<'PYEOF'
import importlib.metadata as md, sys
from packaging.specifiers import SpecifierSet
name, spec = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
try:
    version = md.version(name)
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if version in SpecifierSet(spec, prereleases=True) else 1)
PYEOF
}

pip_install -q --upgrade pip
# setuptools < 81 still ships pkg_resources, which mmcv 2.1.0's setup.py imports.
pip_install -q -c "$CONSTRAINTS" setuptools wheel packaging ninja

# torch: keep an installed torch >= 2.5 (it may be your CUDA build); otherwise the pinned one.
if has torch ">=2.5" && has torchvision; then
  echo "[setup] keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "[setup] installing torch and torchvision (PyPI builds; large download the first time)"
  pip_install -c "$CONSTRAINTS" torch torchvision
fi

if [[ $STACK == onedl ]]; then pip_install -q -c "$CONSTRAINTS" onedl-mmengine; else pip_install -q -c "$CONSTRAINTS" mmengine; fi

# mmcv with compiled ops: mmdet 3.3 / mmseg 1.2 need 2.0 <= mmcv < 2.2, and 2.1.0 has no wheel for
# current torch (onedl-mmcv 2.3.6 has none at all). We build it from the sdist once and keep the wheel in a cache keyed
# by the distribution, the torch version and the op flavour (a wheel built against one torch does not load with
# another).
build_mmcv() {
  local flavour=$1 torch_version include cache tmp
  torch_version=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
  cache="${CVX2_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvx2_backbone/wheels}/$MMCV_DIST-$MMCV_VERSION-torch$torch_version-$flavour"
  if ! compgen -G "$cache/$MMCV_FILE-*.whl" >/dev/null; then
    echo "[setup] building $MMCV_DIST $MMCV_VERSION with $flavour ops (10-20 minutes on 2 cores; cached in $cache)"
    tmp=$(mktemp -d)
    pip_install -q --upgrade pip >/dev/null
    "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "$MMCV_DIST==$MMCV_VERSION" -d "$tmp"
    tar xzf "$tmp/$MMCV_FILE.tar.gz" -C "$tmp"
    include=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
    if grep -q "C++20 or later" "$include/ATen/ATen.h" 2>/dev/null; then
      # This torch's headers need C++20; mmcv 2.1.0's and onedl-mmcv 2.3.6's setup.py ask for C++14/17.
      sed -i 's/-std=c++1[47]/-std=c++20/g' "$tmp/$MMCV_FILE/setup.py"
    fi
    if [[ $flavour == cuda ]]; then export FORCE_CUDA=1; else export FORCE_CUDA=0; fi
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel -q --no-build-isolation --no-deps "$tmp/$MMCV_FILE" -w "$tmp/wheel"
    mkdir -p "$cache"
    mv "$tmp"/wheel/"$MMCV_FILE"-*.whl "$cache/"
    rm -rf "$tmp"
  fi
  pip_install -q -c "$CONSTRAINTS" "$cache"/"$MMCV_FILE"-*.whl
}

if has "$MMCV_DIST" "$MMCV_SPEC" && "$PY" -c "import mmcv.ops" 2>/dev/null; then
  echo "[setup] keeping installed mmcv $("$PY" -c 'import mmcv; print(mmcv.__version__)') (ops present)"
else
  want_cuda=${CVX2_MMCV_CUDA:-auto}
  if [[ $want_cuda == auto ]]; then
    want_cuda=0
    if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
       && "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
      want_cuda=1
    fi
  fi
  if [[ $want_cuda == 1 ]]; then build_mmcv cuda; else build_mmcv cpu; fi
fi

if [[ $STACK == upstream ]]; then
  pip_install -q -c "$CONSTRAINTS" -e ".[test]"
else
  # The forks' distributions are not the names setup.py requires (mmengine, mmcv, mmdet, mmsegmentation): installing
  # `.[test]` would put upstream's over the forks' modules. So the package goes in without dependencies and then
  # everything setup.py requires except those four, with the forks in their place. onedl-mmdetection declares imaug
  # (it provides `imgaug`), whose opencv-python<4.13 pin would replace the opencv everything else uses: imaug and the
  # two forks go in with --no-deps, followed by what they really import (opencv-python too: onedl-mmengine imports cv2
  # without declaring it).
  pip_install -q --no-deps -e .
  mapfile -t needs < <("$PY" - <<'PYEOF'
import re, runpy, setuptools
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
runpy.run_path("setup.py", run_name="__main__")
upstream = {"mmengine", "mmcv", "mmdet", "mmsegmentation"}
for requirement in sorted(set(captured["install_requires"]) | set(captured["extras_require"]["test"])):
    if re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower() not in upstream:
        print(requirement)
PYEOF
)
  pip_install -q -c "$CONSTRAINTS" "${needs[@]}"
  pip_install -q --no-deps -c "$CONSTRAINTS" onedl-mmdetection onedl-mmsegmentation imaug
  pip_install -q -c "$CONSTRAINTS" six scipy shapely scikit-image imageio pycocotools terminaltables tqdm ftfy \
    prettytable regex addict opencv-python
fi
# Three packages go in without their declared dependencies, because they declare pins this stack cannot meet
# although their code runs on it:
# - openmim 0.3.9 (`mim train|test|run cvx2_backbone ...`) declares opendatalab, which pins old setuptools, requests
#   and rich; mim runs without it (its needs are in the test extra);
# - mmdeploy 1.3.1 declares protobuf<=3.20.2, which onnx >= 1.16 rules out; it runs with current protobuf
#   (docs/deployment.md); the one dependency it needs, aenum, is in the deploy extra;
# - panopticapi (COCO panoptic quality; mmdet's CocoPanopticMetric and LoadPanopticAnnotations import it) is not on
#   PyPI under that name: panopticapi-lite ships its modules unchanged but declares numpy<2 (numpy, pillow and
#   pycocotools are already here; matplotlib and scikit-image are only used by scripts mmdet never imports).
pip_install -q --no-deps -c "$CONSTRAINTS" mmdeploy panopticapi-lite openmim

# mim looks for a package's tools and configs in <site-packages>/<package>/.mim, which an editable install does not
# make (setuptools puts an import hook there, not the package). Give it what a develop-mode mmdet has: .mim links to
# configs/, tools/ and the model index inside the checkout's package (git-ignored), and the package linked into
# site-packages, unless something else is installed under that name.
mkdir -p cvx2_backbone/.mim
for item in configs tools model-index.yml; do ln -sfn "../../$item" "cvx2_backbone/.mim/$item"; done
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ -L "$site/cvx2_backbone" || ! -e "$site/cvx2_backbone" ]]; then
  ln -sfn "$ROOT/cvx2_backbone" "$site/cvx2_backbone"
fi
echo "[setup] done: $("$PY" -c 'import torch, mmcv, mmdet, mmseg, timm; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}")')"
