#!/usr/bin/env bash
# The GPU half of the benchmarks, in stages that each fit one 10-minute command on a lent GPU machine
# (see bench/README.md for the device calls). Results go to $OUT (the device tool brings that folder
# back); commit them under bench/results/.
#
#   bash bench/gpu_session.sh build tests ops     # rebuild _C against the machine's torch, CUDA tests, op timings
#   bash bench/gpu_session.sh seed                # CIFAR-10 / ResNet-18 seed table, bf16 + channels_last
#   bash bench/gpu_session.sh methods             # unlearnx bench: pytorch vs fused, ingredients (fused+compile), score
#   bash bench/gpu_session.sh compile             # compiled runs with CUDA graphs (mode reduce-overhead) vs eager fused
#
# Each stage is safe to repeat: trained models are cached under $UNLEARNX_CACHE (default
# ~/.cache/unlearnx), so a stage cut off by the time limit goes on where it stopped when run again on
# the same (still warm) machine. DEVICE=cpu SUBSET=N runs the same stages as a smoke test on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench/results/gpu-session}
DEVICE=${DEVICE:-cuda}
SUBSET=${SUBSET:-0}                      # >0: keep N examples per split (CPU smoke runs only)
RUNS=${RUNS:-3}                          # the score needs >= 3 runs a side (F is 0 by construction at 2)
CIFAR=${CIFAR:-/tmp/cifar10-jpeg}
PACK=${PACK:-.carry/cifar10-jpeg.npz}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

need_cifar() {
    if [ -d "$CIFAR/train" ]; then return; fi
    if [ -f "$PACK" ]; then
        "$PY" bench/cifar_pack.py unpack "$PACK" "$CIFAR"
    else
        echo "no CIFAR-10: set CIFAR=PATH/cifar10-jpeg, or bring $PACK (python bench/cifar_pack.py pack PATH/cifar10-jpeg $PACK)" >&2
        exit 2
    fi
}

stage_build() {
    if [ -z "${CUDA_HOME:-}" ]; then
        if [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda
        elif command -v nvcc >/dev/null; then CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")"); export CUDA_HOME
        fi
    fi
    # Only this machine's architecture: a third of the compile time of the default 8.0;9.0.
    if [ "$DEVICE" = cuda ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
        TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
        export TORCH_CUDA_ARCH_LIST FORCE_CUDA=1
    fi
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tee "$OUT/build.log"
    "$PY" -m unlearnx.cli.main info | tee "$OUT/info.txt"
}

stage_tests() {
    # The whole suite; on a GPU machine the CUDA tests (marker `cuda`) run instead of skipping.
    "$PY" -m pytest -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/tests.log"
}

stage_ops() {
    "$PY" bench/bench_ops.py --device "$DEVICE" --out "$OUT/ops-$DEVICE.json" | tee "$OUT/ops-$DEVICE.txt"
}

stage_seed() {
    need_cifar
    local bf16=()
    [ "$DEVICE" = cuda ] && bf16=(--bf16)
    "$PY" bench/seed_table.py --data "$CIFAR" --device "$DEVICE" --runs "$RUNS" --subset "$SUBSET" "${bf16[@]}" \
        --out "$OUT/seed-table-$DEVICE"
}

stage_methods() {
    need_cifar
    local data=$CIFAR
    if [ "$SUBSET" != 0 ]; then data=digits; fi   # the smoke run keeps to the embedded data
    "$PY" -m unlearnx.cli.main bench --device "$DEVICE" --data "$data" --methods scl,scl-bikl,grad-ascent \
        --ingredients --runs "$RUNS" --out "$OUT/bench-methods-$DEVICE.json" --force
}

stage_compile() {
    # The end-to-end lever on a GPU: the fixed-shape loops as CUDA graphs (torch.compile mode reduce-overhead).
    need_cifar
    local data=$CIFAR
    if [ "$SUBSET" != 0 ]; then data=digits; fi
    UNLEARNX_COMPILE_MODE=reduce-overhead "$PY" -m unlearnx.cli.main bench --device "$DEVICE" --data "$data" \
        --methods scl,scl-bikl,grad-ascent --compile --runs "$RUNS" --verbose \
        --out "$OUT/bench-compile-reduce-overhead-$DEVICE.json" --force
}

[ $# -gt 0 ] || { sed -n '2,14p' "$0"; exit 2; }
for stage in "$@"; do
    case $stage in
        build|tests|ops|seed|methods|compile) echo "== $stage ($(date -u +%T))"; "stage_$stage" ;;
        *) echo "unknown stage $stage (build, tests, ops, seed, methods, compile)" >&2; exit 2 ;;
    esac
done
