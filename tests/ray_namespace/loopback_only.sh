# `unlearnx evaluate --backend ray` without an address, on a machine with a second, routed interface
# (a veth pair in 198.51.100.0/24, a documentation range; nothing leaves the namespace): every listening
# socket sampled while it runs must be on 127.0.0.1 or ::1, and no Ray process may outlive the command.
source "$(dirname "$0")/common.sh"
ip link add v0 type veth peer name v1
ip addr add 198.51.100.2/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default via 198.51.100.1
export UNLEARNX_CACHE=$WORK/cache
unlearnx evaluate -m finetune --data "$DATA" --runs 3 --backend ray --workers 2 --timing-runs 1 -q \
  --out "$WORK/report.json" >"$WORK/evaluate.log" 2>&1 &
CMD=$!
while kill -0 $CMD 2>/dev/null; do
  ss -Htlnp >>"$WORK/listeners.txt" 2>/dev/null || true
  sleep 0.3
done
set +e
wait $CMD
echo "evaluate exit $?" >>"$WORK/evaluate.log"
sleep 1
ps -eo pid,args | grep -v -E "^ *PID|ps -eo|grep|loopback_only.sh|sleep" >"$WORK/left.txt"
true
