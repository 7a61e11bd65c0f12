#!/usr/bin/env bash
# Compile the C++ sources of unlearnx._C (csrc/*.cpp, csrc/cpu/*.cpp) for another architecture against the
# installed torch's headers: syntax and code generation, no linking. Proves the CPU kernels build where
# users are (x86 SIMD paths sit behind architecture checks, with a portable path otherwise).
#
#   tools/cross_compile_check.sh                 # aarch64 with aarch64-linux-gnu-g++ (Debian: g++-aarch64-linux-gnu)
#   CXX=powerpc64le-linux-gnu-g++ tools/cross_compile_check.sh
#   OPT=-O0 JOBS=2 tools/cross_compile_check.sh  # quicker code generation, 2 files at a time
#   SYNTAX_ONLY=1 tools/cross_compile_check.sh   # front end only (the test suite's quick form)
set -euo pipefail
cd "$(dirname "$0")/.."

CXX="${CXX:-aarch64-linux-gnu-g++}"
OPT="${OPT:--O2}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
PYTHON="${PYTHON:-python}"
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "cross_compile_check: $CXX not found (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)" >&2
  exit 3
fi

mapfile -t INCLUDES < <("$PYTHON" - 2>/dev/null <<'PY'
import sysconfig
from torch.utils.cpp_extension import include_paths
for path in include_paths() + [sysconfig.get_paths()["include"]]:
    print(path)
PY
)
MODE=(-c)
[[ "${SYNTAX_ONLY:-0}" == 1 ]] && MODE=(-fsyntax-only)
FLAGS=(-std=c++20 "$OPT" -fopenmp -fPIC -DNDEBUG -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H
       -D_GLIBCXX_USE_CXX11_ABI=1 -Icsrc)
for dir in "${INCLUDES[@]}"; do FLAGS+=(-isystem "$dir"); done

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
SOURCES=(csrc/*.cpp csrc/cpu/*.cpp)
echo "cross_compile_check: $("$CXX" -dumpmachine) with $CXX ${MODE[*]} $OPT, ${#SOURCES[@]} files"
export CXX OUT MODE_FLAG="${MODE[0]}"
printf '%s\n' "${SOURCES[@]}" | xargs -P "$JOBS" -I{} bash -c '
  src="{}"; obj="$OUT/$(echo "$src" | tr / _).o"
  if "$CXX" "$@" $MODE_FLAG "$src" -o "$obj" 2>"$obj.log"; then echo "  ok      $src"
  else echo "  FAILED  $src"; sed "s/^/    /" "$obj.log" | head -40; exit 255; fi' _ "${FLAGS[@]}"
echo "cross_compile_check: all ${#SOURCES[@]} files compile for $("$CXX" -dumpmachine)"
