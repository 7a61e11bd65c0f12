#!/usr/bin/env bash
# CUDA checks that need no GPU:
#  1. ptx: every csrc/cuda/*.cu compiled by nvcc for the newest architecture of the default list
#     with -Xptxas -v (device code to SASS, as the build does); fails on a compile error and on any
#     register spill in the loss kernels (bikl_rows_kernel / scl_rows_kernel).
#  2. sanitize: the SIMT test driver (tests/simt/sanitize_main.cpp) built with AddressSanitizer and
#     with ThreadSanitizer, run on a small subset of kernels.
# Usage: tools/cuda_checks.sh [ptx|sanitize|all]   (default all). Needs nvcc for ptx (CUDA_HOME).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
PY="${PYTHON:-python}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

ptx_check() {
  local nvcc="$CUDA_HOME/bin/nvcc"
  [ -x "$nvcc" ] || { echo "cuda_checks: no nvcc at $nvcc (set CUDA_HOME)"; exit 1; }
  local arch="${UNLEARNX_CHECK_ARCH:-90}"
  # Include paths and defines as torch's CUDAExtension uses them; the nvcc flags the build uses.
  mapfile -t incs < <("$PY" - <<'PY'
from torch.utils.cpp_extension import include_paths
for p in include_paths(device_type="cuda"):
    print("-I" + p)
import sysconfig
print("-I" + sysconfig.get_paths()["include"])
PY
)
  # The optimisation flags of setup.py (which refuses fast-math flags).
  local flags=(-O3 -DNDEBUG)
  read -r -a extra <<<"${NVCC_FLAGS:-}"
  flags+=("${extra[@]}")
  local fail=0
  for cu in csrc/cuda/*.cu; do
    local log="$OUT/$(basename "$cu").log"
    echo "== nvcc sm_$arch $cu"
    if ! "$nvcc" -cubin -o "$OUT/$(basename "$cu").cubin" "$cu" -Icsrc "${incs[@]}" -std=c++20 \
        -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -D__CUDA_NO_HALF_OPERATORS__ \
        -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
        --expt-relaxed-constexpr -gencode "arch=compute_$arch,code=sm_$arch" "${flags[@]}" -Xptxas -v \
        >"$log" 2>&1; then
      cat "$log"; echo "cuda_checks: $cu does not compile"; fail=1; continue
    fi
    # ptxas prints, per kernel: "Compiling entry function '<mangled>'" then "... bytes spill stores, ... spill loads".
    if [[ "$cu" == *losses.cu ]]; then
      awk '/Compiling entry function/ {fn=$0; sub(/.*function .?/, "", fn); sub(/.? for .*/, "", fn)}
           fn ~ /(bikl|scl)_rows_kernel/ && (/spill/ || /Used [0-9]+ registers/) {print "  " fn ": " $0}
           /spill/ && fn ~ /(bikl|scl)_rows_kernel/ && /[1-9][0-9]* bytes spill (stores|loads)/ {bad=1}
           END {exit bad}' "$log" | sed -E 's/ptxas info *: //' \
        || { echo "cuda_checks: register spills in the loss kernels"; fail=1; }
      grep -c "Compiling entry function" "$log" | xargs echo "  kernels compiled:"
    fi
  done
  return $fail
}

sanitize_check() {
  local cxx="${CXX:-g++}"
  local inc
  inc="$("$PY" -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I" + p for p in include_paths()))')"
  for san in address thread; do
    echo "== simt driver with -fsanitize=$san"
    # shellcheck disable=SC2086
    "$cxx" -std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=$san -Icsrc $inc \
      tests/simt/sanitize_main.cpp -o "$OUT/simt_$san" -pthread
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 TSAN_OPTIONS=halt_on_error=1 "$OUT/simt_$san"
  done
  echo "== ThreadSanitizer reports a missing __syncthreads (toy kernel)"
  if TSAN_OPTIONS=halt_on_error=1 "$OUT/simt_thread" --toy-race >"$OUT/race.log" 2>&1 \
      || ! grep -q "data race" "$OUT/race.log"; then
    cat "$OUT/race.log"; echo "cuda_checks: ThreadSanitizer did not report the toy kernel's race"; return 1
  fi
  echo "  reported"
}

case "$what" in
  ptx) ptx_check ;;
  sanitize) sanitize_check ;;
  all) ptx_check; sanitize_check ;;
  *) echo "usage: $0 [ptx|sanitize|all]"; exit 2 ;;
esac
