# Two Ray nodes on one machine (separate temp dirs), a protocol whose runs land on both, and the second
# node killed once it has finished a run: the protocol must still complete with every run.
source "$(dirname "$0")/common.sh"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=0123456789abcdef0123456789abcdef
# Notice a dead node within a few seconds rather than the default half minute.
export RAY_health_check_period_ms=500 RAY_health_check_timeout_ms=500 RAY_health_check_failure_threshold=3
PORT=6399
RT=$(mktemp -d /tmp/uxr.XXXXXX)   # Ray's socket paths must stay under 108 bytes
trap 'rm -rf "$RT"' EXIT
ray start --head --port=$PORT --num-cpus=1 --include-dashboard=false --temp-dir=$RT/head --disable-usage-stats >$WORK/head.log 2>&1
ray start --address=127.0.0.1:$PORT --num-cpus=1 --temp-dir=$RT/node2 --disable-usage-stats >$WORK/node2.log 2>&1
python "$(dirname "$0")/../ray_driver.py" "$WORK" "127.0.0.1:$PORT" &
DRIVER=$!
# Kill the second node (every process started for it, by pid) as soon as a run came back from it.
for i in $(seq 1 600); do
  if [ -f "$WORK/node2-ran" ]; then
    for pid in $(ps -eo pid,args | grep -F "$RT/node2" | grep -v grep | awk '{print $1}'); do kill -9 "$pid" 2>/dev/null || true; done
    echo "killed node2" > "$WORK/node2-killed"
    break
  fi
  kill -0 $DRIVER 2>/dev/null || break
  sleep 0.2
done
wait $DRIVER
