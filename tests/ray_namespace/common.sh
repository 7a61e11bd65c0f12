# Sourced by the namespace scripts: runs as root inside `unshare -npf --mount-proc` (a private network and
# PID namespace, so every Ray process dies with it and nothing can listen beyond it). Brings up loopback.
set -euo pipefail
# Refuse to start Ray anywhere else: outside a fresh network namespace it would pick the machine's address.
if [ "$$" != 1 ] || [ "$(ip -o link show | wc -l)" != 1 ]; then
  echo "run this inside unshare -npf --mount-proc (a private network and PID namespace), not directly" >&2
  exit 3
fi
ip link set lo up
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
export HOME=$WORK/home   # Ray writes ~/.ray; keep it inside the test's folder
mkdir -p "$HOME"
