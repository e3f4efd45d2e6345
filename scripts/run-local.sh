#!/usr/bin/env bash
# run-local.sh - install what is missing, build, and run a whole twinmesh cluster on
# loopback (broker, gateway, 2 workers, fresh CURVE keys) fed by a simulated city,
# showing live ingest figures and cluster status.
#
#   scripts/run-local.sh [--duration 60s|0] [--twins N] [--rate N] [--workers N]
#                        [--keep] [--no-fsync]
#
# --duration 0 runs until Ctrl-C. --keep leaves the keys, data and logs behind.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=60s twins=10000 rate=0 workers=2 keep=0 fsync=true
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --twins) twins="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --no-fsync) fsync=false; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-local: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh build
echo "run-local: building..."
bash scripts/build.sh build
bin=build

dir=$(mktemp -d /tmp/twinmesh-local.XXXXXX)
mkdir -p "$dir/keys" "$dir/logs" "$dir/data"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then
        echo "run-local: keys, data and logs kept in $dir"
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports, chosen by the kernel.
read -r p_broker p_pub p_gw ports_w < <(/usr/bin/python3 - "$workers" <<'PY'
import socket, sys
socks = []
for _ in range(3 + int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
ports = [s.getsockname()[1] for s in socks]
print(ports[0], ports[1], ports[2], ",".join(map(str, ports[3:])))
PY
)
IFS=, read -r -a wports <<< "$ports_w"

ctl() { "$bin/cli/twinctl" "$@"; }
for k in broker:broker gateway-0:gateway producer:ingest admin:admin; do
    ctl keygen "${k%%:*}" --role "${k##*:}" --dir "$dir/keys" >/dev/null
done
for ((i = 0; i < workers; i++)); do
    ctl keygen "worker-$i" --role worker --dir "$dir/keys" >/dev/null
done

export TWINMESH_KEYS="$dir/keys"
export TWINMESH_BROKER="tcp://127.0.0.1:$p_broker"
export TWINMESH_BROKER_PUB="tcp://127.0.0.1:$p_pub"
export TWINMESH_GATEWAY="tcp://127.0.0.1:$p_gw"

"$bin/broker/twinmesh-broker" --bind "$TWINMESH_BROKER" --pub-bind "$TWINMESH_BROKER_PUB" \
    --data-dir "$dir/data/broker" --expect-workers "$workers" 2>"$dir/logs/broker.log" &
pids+=($!)
for ((i = 0; i < workers; i++)); do
    "$bin/worker/twinmesh-worker" --id "worker-$i" --bind "tcp://127.0.0.1:${wports[$i]}" \
        --data-dir "$dir/data/worker-$i" --fsync "$fsync" 2>"$dir/logs/worker-$i.log" &
    pids+=($!)
done
"$bin/gateway/twinmesh-gateway" --id gateway-0 --bind "$TWINMESH_GATEWAY" \
    2>"$dir/logs/gateway-0.log" &
pids+=($!)

if ! ctl wait-ready --workers "$workers" --timeout 30s; then
    echo "run-local: the cluster did not become ready; last log lines:" >&2
    tail -n 5 "$dir"/logs/*.log >&2
    exit 1
fi
ctl status
# The city's models (units, valid ranges, limits, derived properties); the workers
# fetch them within a heartbeat.
ctl model load models/*.json
sleep 1.5

echo
echo "run-local: simulated city: $twins twins, rate ${rate/#0/as fast as acks allow}, duration $duration"
echo "run-local: logs in $dir/logs; Ctrl-C stops"
# Cluster status every 10 s beside the simulator's per-second line.
( while sleep 10; do echo; ctl status || true; echo; done ) &
status_pid=$!
pids+=("$status_pid")
set +e
ctl sim --twins "$twins" --rate "$rate" --duration "$duration"
sim_rc=$?
set -e
kill "$status_pid" 2>/dev/null || true
sleep 1.5      # node figures travel with the 1 s heartbeats
echo
ctl status
echo
echo "run-local: one twin, as a user reads it:"
ctl twin get milan/air-000000 || true
echo
echo "run-local: a query across every twin (docs/queries.md):"
echo "  SELECT district, count(*), avg(pm25), p90(pm25), max(no2) FROM twins WHERE model = 'air_station' GROUP BY district ORDER BY avg(pm25) DESC"
ctl query "SELECT district, count(*), avg(pm25), p90(pm25), max(no2) FROM twins WHERE model = 'air_station' GROUP BY district ORDER BY avg(pm25) DESC" || true
echo
echo "  SELECT model, status, count(*) FROM twins GROUP BY model, status"
ctl query "SELECT model, status, count(*) FROM twins GROUP BY model, status" || true
exit "$sim_rc"
