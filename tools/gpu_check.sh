#!/usr/bin/env bash
# One prepared run on a lent GPU machine (issue 30): the `gpu` test lane, `cvx2 bench --device cuda` with the
# compiled and checkpointed cases, the depthwise convolution in both layouts, a kernel profile of compiled cvx2
# against compiled timm, and one table at the end.
# Everything it needs travels with the checkout: the device reaches no package registry.
#
#   tools/gpu_check.sh [--dry-run] [--no-tests] [--no-bench] [--no-profile]
#
# Before the device session, fill the git-ignored folder .whl with the pure-Python wheels the device lacks
# (mmengine and the four of its needs not installed there; the rest are):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     mmengine==0.10.7 addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9
#
# and run it with `.whl` carried: run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=540).
# Logs, the bench JSON and the profiles go to $OUT (the device tool's result folder; ./gpu_check_out elsewhere).
# Budget: under 8 minutes in all (tests 130 s, one bench run per input shape of up to 150 s each, the profile with
# what is left of 450 s); each step is cut at its limit and the table still prints what finished. --dry-run prints
# the steps and checks what it can without a GPU (the cases parse, the scripts compile, the wheels are there).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu_check_out}
SITE=${SITE:-/tmp/site}  # where the wheels are installed
WHEEL_DIR=${WHEEL_DIR:-.whl}  # the carried wheels
DRY_RUN=0 TESTS=1 BENCH=1 PROFILE=1
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    --no-tests) TESTS=0 ;;
    --no-bench) BENCH=0 ;;
    --no-profile) PROFILE=0 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
TOTAL_BUDGET=450 TEST_LIMIT=130 GROUP_LIMIT=150 GROUP_MIN=45 PROFILE_MIN=60
GPU_TESTS=(tests/models/test_gpu.py tests/engine/test_fsdp2_runner.py tests/models/test_compile.py)
WHEELS=(mmengine addict termcolor yapf platformdirs)
# GPU_CHECK_CASES grouped by input shape, in their order: one line "SHAPE CASE,CASE,..." per bench run
GROUPS_TEXT=$("$PY" -c "import sys; sys.path.insert(0, '.'); from cvx2_backbone.benchmark.options import GPU_CHECK_CASES
groups = {}
[groups.setdefault(c.split('@')[1], []).append(c) for c in GPU_CHECK_CASES]
print('\n'.join(f'{shape} {\",\".join(cases)}' for shape, cases in groups.items()))") \
  || { echo "cannot read GPU_CHECK_CASES from cvx2_backbone/bench_options.py" >&2; exit 2; }
PROFILE_ARGS=(tools/compile_profile.py --device cuda --size tiny --batch 64 --resolution 224 --precision bf16
              --calls 10 --out "$OUT/profile")
mkdir -p "$OUT"
export OUT
SECONDS=0

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, output to the console and $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== [$SECONDS s] $name (limit ${limit} s): $*"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== [$SECONDS s] $name: exit $rc"
  echo "$rc" > "$OUT/$name.rc"
}

# 1. wheels (pure Python, no index), then the checkout itself on the path
missing=()
for name in "${WHEELS[@]}"; do compgen -G "$WHEEL_DIR/${name}-*.whl" > /dev/null || missing+=("$name"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing wheels in $WHEEL_DIR: ${missing[*]}; fill it with the pip download command at the top of $0" >&2
  exit 2
fi
echo "== [$SECONDS s] install: $PY -m pip install --no-index --no-deps --target $SITE $WHEEL_DIR/*.whl"
if [ "$DRY_RUN" = 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEEL_DIR"/*.whl \
    || exit 3
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "$DRY_RUN" = 1 ]; then  # what can be checked without a GPU: the cases parse, the scripts compile
  "$PY" -c "import sys; sys.path.insert(0, '.'); from cvx2_backbone.benchmark.options import Case, GPU_CHECK_CASES
[Case.parse(c) for c in GPU_CHECK_CASES]; print('cases:', ', '.join(GPU_CHECK_CASES))" || exit 4
  "$PY" -m py_compile tools/compile_profile.py tools/dwconv_layout.py tools/benchmark.py || exit 4
  for test in "${GPU_TESTS[@]}"; do [ -f "$test" ] || { echo "missing $test" >&2; exit 4; }; done
else
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import torch, timm, mmengine; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm',
timm.__version__, 'mmengine', mmengine.__version__, 'gpu', torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/env.log"
fi

# 2. the gpu test lane (CUDA kernels equal the plain ops, AMP steps finite, FSDP2 on NCCL, CUDA inductor numerics)
[ "$TESTS" = 1 ] && step gpu-tests "$TEST_LIMIT" "$PY" -m pytest -m gpu -q -p no:cacheprovider \
  --junitxml="$OUT/gpu-tests.xml" "${GPU_TESTS[@]}"

# 3. the benchmark, one run per input shape: eager and compiled bf16/fp16 inference, bf16 training with checkpointing
#    per block and per stage (each run gets at most GROUP_LIMIT s and what is left of the budget)
if [ "$BENCH" = 1 ]; then
  while read -r shape cases; do
    left=$((TOTAL_BUDGET - SECONDS))
    if [ "$DRY_RUN" = 0 ] && [ "$left" -lt "$GROUP_MIN" ]; then
      echo "== [$SECONDS s] bench-$shape skipped: ${left} s left of the ${TOTAL_BUDGET} s budget"; continue
    fi
    step "bench-$shape" "$((left < GROUP_LIMIT ? left : GROUP_LIMIT))" "$PY" tools/benchmark.py --device cuda \
      --sizes tiny --impls cvx2,timm --cases "$cases" --repeats 20 --det-repeats 20 --warmup 2 \
      --json "$OUT/bench-$shape.json"
  done <<< "$GROUPS_TEXT"
fi

# 4. the depthwise convolution in NCHW and channels-last at the stages' shapes (batch-1 detection size: 0.89x timm)
left=$((TOTAL_BUDGET - SECONDS))
if [ "$BENCH" = 1 ] && { [ "$DRY_RUN" = 1 ] || [ "$left" -ge 30 ]; }; then
  step dwconv-layout "$((left < 45 ? left : 45))" "$PY" tools/dwconv_layout.py --device cuda --precision bf16
fi

# 5. kernel profile of both compiled models (inductor's generated code in the log), with what is left of the budget
if [ "$PROFILE" = 1 ]; then
  left=$((TOTAL_BUDGET - SECONDS))
  if [ "$DRY_RUN" = 1 ] || [ "$left" -ge "$PROFILE_MIN" ]; then
    # inductor's generated code (TORCH_LOGS=output_code, on stderr) to its own file, compressed afterwards
    step profile "$((left < 150 ? left : 150))" bash -c \
      'TORCH_LOGS=output_code "$@" 2> "$OUT/inductor-output-code.log"' - "$PY" "${PROFILE_ARGS[@]}"
    [ -f "$OUT/inductor-output-code.log" ] && gzip -f "$OUT/inductor-output-code.log"
  else
    echo "== [$SECONDS s] profile skipped: ${left} s left of the ${TOTAL_BUDGET} s budget"
  fi
fi

# 6. one table
[ "$DRY_RUN" = 1 ] && { echo "== dry run: nothing ran"; exit 0; }
"$PY" - "$OUT" "$(grep -c . <<< "$GROUPS_TEXT")" <<'EOF'
import glob, json, os, re, sys
out = sys.argv[1]
env = os.path.join(out, "env.log")
env = "; ".join(line.strip() for line in open(env) if line.strip())[-400:] if os.path.exists(env) else "no env.log"
print(f"\n==== issue 30 GPU check ({env})")
print("| what | cvx2 img/s | timm img/s | cvx2 / timm | peak MiB cvx2 / timm | compile s cvx2 / timm |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
log = os.path.join(out, "gpu-tests.log")
if os.path.exists(log):
    tail = [line for line in open(log).read().splitlines() if re.search(r"passed|failed|error|skipped", line)]
    print(f"| pytest -m gpu | {tail[-1].strip('= ') if tail else 'no summary (cut at its limit?)'} | | | | |")
paths = sorted(glob.glob(os.path.join(out, "bench-*.json")), key=os.path.getmtime)
for path in paths:
    rows = {(r["case"], r["impl"]): r for r in json.load(open(path))["results"]}
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    for case in dict.fromkeys(c for c, _ in rows):
        ours, timm = rows.get((case, "cvx2")), rows.get((case, "timm"))
        if not ours:
            continue
        ratio = ours["img_per_s"] / timm["img_per_s"] if timm else None
        print(f"| {case} | {ours['img_per_s']:.4g} | {fmt(timm and timm['img_per_s'], '.4g')} | "
              f"{fmt(ratio, '.2f')} | {fmt(ours['peak_mib'], '.0f')} / {fmt(timm and timm['peak_mib'], '.0f')} | "
              f"{fmt(ours['compile_s'], '.0f')} / {fmt(timm and timm['compile_s'], '.0f')} |")
    summary = json.load(open(path))["summary"]
    for size, checks in summary.items():
        for label, check in checks.items():
            print(f"| target: {label} | {check['value']:.2f} | >= {check['target']:.2f} | "
                  f"{'met' if check['met'] else 'NOT met'} | | |")
if len(paths) < int(sys.argv[2]):
    print(f"| cvx2 bench --device cuda | {len(paths)} of {sys.argv[2]} runs wrote results (see bench-*.log) | | | | |")
if os.path.exists(os.path.join(out, "dwconv-layout.log")):
    print("| depthwise 7x7 NCHW vs channels-last | see dwconv-layout.log (table) | | | | |")
for text in sorted(glob.glob(os.path.join(out, "profile", "kernels_*.txt"))):
    print(f"| profile | {open(text).readline().strip('= ').strip()} | | | | |")
EOF
echo "== [$SECONDS s] done; logs in $OUT"
