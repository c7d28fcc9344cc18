#!/usr/bin/env bash
# Redis replication through a `palisade node` forward, across two network namespaces.
#
#   sudo integrations/sidecar/redis_replication.sh     (from the workspace root; needs root)
#
# Namespace pal-redis-1 holds the primary (127.0.0.1:6379, loopback only) and palisade
# node-1, whose service `redis` targets it; namespace pal-redis-2 holds node-2, whose
# forward 127.0.0.1:16379 reaches node-1's `redis`, and a replica started with
# `--replicaof 127.0.0.1 16379`. The namespaces share only a veth pair (10.79.0.1/2), on
# which only palisade listens, so replication goes through the palisade link. Steps,
# each printed PASS or FAIL:
#   1. the replica's link to the primary is up (INFO replication, through the forward);
#   2. 100,000 keys loaded on the primary (`redis-cli --pipe`) reach the replica (the
#      replication stream), and 200 sampled values match;
#   3. a fresh replica (restarted, no persistence) full-syncs all 100,000 keys (an RDB
#      transfer through the forward), and the sample matches again.
# Exits non-zero on failure; bounded (every wait has a timeout, a watchdog ends the run
# after $REDIS_REPL_MAX_S s); everything it made is removed on any exit.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "redis_replication.sh: skipped: needs root (network namespaces)"; exit 77; }
command -v ip >/dev/null || { echo "redis_replication.sh: skipped: needs iproute2's ip"; exit 77; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MAX_S=${REDIS_REPL_MAX_S:-150}
KEYS=${REDIS_REPL_KEYS:-100000}

need_packages() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    if command -v apt-get >/dev/null; then
        echo "installing redis-server redis-tools"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools >/dev/null; } \
            || true
    fi
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
        || { echo "redis_replication.sh: skipped: redis-server/redis-cli not installed and apt-get could not install them"; exit 77; }
}
need_packages

cargo build -q -p palisade-cli
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PAL=$TARGET/debug/palisade
WORK=$(mktemp -d /tmp/pal-redis-repl.XXXXXX)
NS=(pal-redis-1 pal-redis-2)
C=$WORK/certs
declare -A PID
WATCHDOG_PID=""
FAILED=0

cleanup() {
    local rc=$?
    [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null || true
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    if [ "$rc" != 0 ]; then
        for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }; done
    fi
    [ -n "${KEEP_LOGS:-}" ] && echo "logs kept in $WORK" || rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# shellcheck source=integrations/sidecar/lib.sh
. "$ROOT/integrations/sidecar/lib.sh"
start_watchdog

# --- network: two namespaces joined by one veth pair ---
for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
ip netns add "${NS[0]}"; ip netns add "${NS[1]}"
ip link add pr-eth0 type veth peer name pr-eth1
ip link set pr-eth0 netns "${NS[0]}" name eth0
ip link set pr-eth1 netns "${NS[1]}" name eth0
for i in 1 2; do
    ip -n "${NS[$((i - 1))]}" addr add "10.79.0.$i/24" dev eth0
    ip -n "${NS[$((i - 1))]}" link set eth0 up
    ip -n "${NS[$((i - 1))]}" link set lo up
done

# --- palisade: node-1 offers `redis`, node-2 forwards 127.0.0.1:16379 to it ---
"$PAL" certs init --dir "$C" --cluster redis-repl --nodes node-1,node-2 >/dev/null
for i in 1 2; do
    "$PAL" certs issue --dir "$C" --node "node-$i" --ip "10.79.0.$i" >/dev/null
    sed -i -e "s|^listen = .*|listen = \"10.79.0.$i:7401\"|" -e 's|^seeds = .*|seeds = []|' "$C/node-$i/palisade.toml"
done
cat >> "$C/node-1/palisade.toml" <<EOF

[[service]]
name = "redis"
target = "127.0.0.1:6379"
allow = ["node-2"]
EOF
cat >> "$C/node-2/palisade.toml" <<EOF

[[forward]]
listen = "127.0.0.1:16379"
peer = "node-1"
service = "redis"

[peers]
node-1 = "10.79.0.1:7401"
EOF
for i in 1 2; do
    ip netns exec "${NS[$((i - 1))]}" "$PAL" node --config "$C/node-$i/palisade.toml" > "$WORK/palisade-$i.log" 2>&1 &
    PID[pal$i]=$!
done

# --- redis: loopback only, no persistence (the data dir is the run's folder) ---
start_redis() { # ns index, name, extra args
    local i=$1 name=$2; shift 2
    mkdir -p "$WORK/$name"
    ip netns exec "${NS[$((i - 1))]}" redis-server --bind 127.0.0.1 --port 6379 --save "" \
        --appendonly no --dir "$WORK/$name" --daemonize no --logfile "$WORK/$name.log" "$@" &
    PID[$name]=$!
}
rcli() { local i=$1; shift; ip netns exec "${NS[$((i - 1))]}" redis-cli -h 127.0.0.1 -p 6379 "$@"; }
# No 5 s wait before a diskless full sync: step 3 times it.
start_redis 1 primary --repl-diskless-sync-delay 0
wait_for 10 "the primary answers PING" bash -c "[ \"\$(ip netns exec ${NS[0]} redis-cli -p 6379 ping)\" = PONG ]" || exit 1
start_redis 2 replica --replicaof 127.0.0.1 16379
link_up() { rcli 2 info replication | grep -q '^master_link_status:up'; }
dbsize_is() { [ "$(rcli "$1" dbsize)" = "$2" ]; }

# --- 1. the replication link is up, through the forward ---
if wait_for 30 "the replica's master_link_status:up" link_up; then
    # The primary sees its replica at 127.0.0.1 (node-1's connection to its target), not
    # at 10.79.0.2: the replication connection is palisade's.
    rep=$(rcli 1 info replication | grep '^slave0:' | tr -d '\r' || true)
    # And nothing but palisade listens on, or talks over, the veth.
    bad=""
    for i in 1 2; do
        bad+=$(ip netns exec "${NS[$((i - 1))]}" ss -Htln | awk -v me="10.79.0.$i:7401" '$4 !~ /^127\.0\.0\.1:/ && $4 != me { print " listen " $4 }')
        bad+=$(ip netns exec "${NS[$((i - 1))]}" ss -Htn state established | awk \
            '$3 ~ /^10\.79\./ && $3 !~ /:7401$/ && $4 !~ /:7401$/ { print " conn " $3 "-" $4 }')
    done
    case "$rep" in
        *ip=127.0.0.1*) [ -z "$bad" ] && pass "1. replica linked through the forward ($rep; only palisade on the veth)" \
            || fail "1. a path beside palisade:$bad" ;;
        *) fail "1. the primary sees the replica as '$rep', not via node-1 on loopback" ;;
    esac
else
    fail "1. the replica never linked"; exit 1
fi

# --- 2. 100,000 keys through the replication stream ---
# The RESP commands are written by awk (fast), then sent with `redis-cli --pipe`.
awk -v n="$KEYS" 'BEGIN { for (i = 1; i <= n; i++) {
    k = "key:" i; v = "value-" i "-" (i * 7919 % 1000003)
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v } }' > "$WORK/load.resp"
sample_matches() { # 200 keys spread over the range: primary and replica agree, and are as written
    local i k a b
    for i in $(seq 1 $((KEYS / 200)) "$KEYS"); do
        k=key:$i
        a=$(rcli 1 get "$k"); b=$(rcli 2 get "$k")
        [ "$a" = "value-$i-$(( i * 7919 % 1000003 ))" ] && [ "$a" = "$b" ] || { log "mismatch at $k: primary '$a', replica '$b'"; return 1; }
    done
}
t=$(now)
ip netns exec "${NS[0]}" redis-cli -p 6379 --pipe < "$WORK/load.resp" > "$WORK/pipe.log" 2>&1 \
    || { fail "2. redis-cli --pipe failed: $(tail -n 2 "$WORK/pipe.log")"; exit 1; }
loaded=$(( $(now) - t ))
if wait_for 60 "the replica holds $KEYS keys" dbsize_is 2 "$KEYS" && reached=$(( $(now) - t )) && sample_matches; then
    pass "2. $KEYS keys loaded on the primary in $loaded ms were all on the replica $reached ms after the load began; 200 sampled values match"
else
    fail "2. the replica has $(rcli 2 dbsize) of $KEYS keys"
fi

# --- 3. a fresh replica full-syncs through the forward ---
kill "${PID[replica]}"; wait "${PID[replica]}" 2>/dev/null || true
rm -rf "$WORK/replica"
t=$(now)
start_redis 2 replica --replicaof 127.0.0.1 16379
if wait_for 60 "the fresh replica holds $KEYS keys" dbsize_is 2 "$KEYS" && reached=$(( $(now) - t )) && link_up && sample_matches; then
    rdb=$(grep -o 'Done loading RDB, keys loaded: [0-9]*' "$WORK/replica.log" | tail -n 1 || true)
    pass "3. a fresh replica full-synced $KEYS keys $reached ms after its start (replica log: ${rdb:-no RDB line}); sample matches"
else
    fail "3. the fresh replica has $(rcli 2 dbsize) of $KEYS keys"
fi

echo "run time: $(( ($(now) - T0) / 1000 )) s"
if [ "$FAILED" = 0 ]; then echo "redis_replication.sh: PASS"; else echo "redis_replication.sh: FAIL"; exit 1; fi
