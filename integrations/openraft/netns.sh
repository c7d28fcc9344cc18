#!/usr/bin/env bash
# The 3-node openraft kv store over palisade across three network namespaces.
#
#   sudo integrations/openraft/netns.sh        (from the workspace root; needs root and `ip`)
#
# Namespaces pal-raft-1..3 each hold one node on 10.77.0.N (a veth pair to a bridge in
# the namespace pal-raft-br); each node's certificate names its own address (IP SAN),
# so TLS hostname verification is real. Certificates, secret and settings files are made
# by `palisade certs init` / `certs issue`. Then, while the leader writes every 50 ms:
#   1. a leader is elected and writes commit;
#   2. the leader's interface is cut (`ip link set eth0 down`) -> a new leader, writes go on;
#   3. it is restored -> the old leader catches up;
#   4. certificates (re-issued) and the secret (add, switch, remove) rotate live;
#   5. a node 4 with a cluster-CA certificate and the wrong secret starts and campaigns.
# It prints the writes committed and lost, the election time after the cut and the writes
# that failed during the rotation; it exits non-zero if a write was lost, a rotation write
# failed, or the intruder moved the term. Everything it made is removed on exit.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "netns.sh: needs root (network namespaces)"; exit 77; }
command -v ip >/dev/null || { echo "netns.sh: needs iproute2's ip"; exit 77; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build -q -p palisade-cli -p palisade-openraft --example kv
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PAL=$TARGET/debug/palisade
KV=$TARGET/debug/examples/kv
WORK=$(mktemp -d /tmp/pal-raft-netns.XXXXXX)
NS=(pal-raft-1 pal-raft-2 pal-raft-3 pal-raft-4)
BR=pal-raft-br
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NS[@]}" "$BR"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s%3N; }
log() { echo "[$(( $(now) - T0 )) ms] $*"; }
T0=$(now)

# --- network: 4 namespaces, a bridge, veth pairs ---
ip netns add "$BR"
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
for i in 1 2 3 4; do
    ns=${NS[$((i - 1))]}
    ip netns add "$ns"
    ip link add "pr$i-eth0" type veth peer name "pr$i-br"
    ip link set "pr$i-eth0" netns "$ns" name eth0
    ip link set "pr$i-br" netns "$BR"
    ip -n "$BR" link set "pr$i-br" master br0 up
    ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done

# --- certificates, secret, settings: as an operator makes them ---
C=$WORK/certs
"$PAL" certs init --dir "$C" --cluster raft-netns --nodes node-1,node-2,node-3 \
    --host 10.77.0.1 --base-port 7401 >/dev/null
"$PAL" certs init --dir "$WORK/other" --cluster raft-netns --nodes node-4 >/dev/null
: > "$C/accepted"
PEERS=1=10.77.0.1:7401,2=10.77.0.2:7401,3=10.77.0.3:7401
settings() { # node folder, address: its own IP SAN, listen address, 1 s reloads
    local node=$1 i=$2
    "$PAL" certs issue --dir "$C" --node "$node" --ip "10.77.0.$i" >/dev/null
    sed -i "s|^listen = .*|listen = \"10.77.0.$i:7401\"|" "$C/$node/palisade.toml"
    printf 'reload_interval = "1s"\naccepted_secret_files = ["%s"]\n' "$C/accepted" \
        >> "$C/$node/palisade.toml"
}
for i in 1 2 3; do settings "node-$i" "$i"; done

start() { # id, extra flags
    local i=$1; shift
    ip netns exec "${NS[$((i - 1))]}" "$KV" --config "$C/node-$i/palisade.toml" --id "$i" \
        --peers "$PEERS" --write-every 50 --write-for 50 --run-for 62 --out "$WORK/n$i" "$@" \
        > "$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
}
start 1 --init
start 2
start 3

leader_of() { grep -h '^node=' "$WORK/n$1.log" | tail -n1 | sed -n 's/.*leader=Some(\([0-9]*\)).*/\1/p'; }
sleep 6
L=$(leader_of 1)
[ -n "$L" ] || { log "no leader after 6 s"; tail -n 5 "$WORK"/n*.log; exit 1; }
log "1. leader elected: node $L"

sleep 4
CUT=$(now)
ip -n "${NS[$((L - 1))]}" link set eth0 down
log "2. cut node $L (ip link set eth0 down in ${NS[$((L - 1))]})"
NEW=""
for _ in $(seq 1 200); do
    for i in 1 2 3; do
        [ "$i" = "$L" ] && continue
        line=$(grep -h "^leader changed to Some(" "$WORK/n$i.log" | grep -v "Some($L)" | tail -n1 || true)
        if [ -n "$line" ]; then
            at=${line##* at }
            if [ "$at" -gt "$CUT" ]; then NEW=${line#leader changed to Some(}; NEW=${NEW%%)*}; ELECTED=$at; break 2; fi
        fi
    done
    sleep 0.1
done
[ -n "$NEW" ] || { log "no new leader within 20 s of the cut"; exit 1; }
log "   node $NEW elected $(( ELECTED - CUT )) ms after the cut"
sleep 5
ip -n "${NS[$((L - 1))]}" link set eth0 up
log "3. restored node $L"

sleep 5
ROT=$(now)
log "4. rotation: new certificates, then the secret (add, switch, remove), 3 s apart"
for i in 1 2 3; do "$PAL" certs issue --dir "$C" --node "node-$i" --ip "10.77.0.$i" >/dev/null; done
NEWSECRET=$WORK/new-secret
"$PAL" secret generate --out "$NEWSECRET" >/dev/null
sleep 3; cp "$NEWSECRET" "$C/accepted"
sleep 3; cp "$C/secret" "$WORK/old-secret"; cp "$NEWSECRET" "$C/secret"; cp "$WORK/old-secret" "$C/accepted"
sleep 3; : > "$C/accepted"
sleep 3
ROT_END=$(now)

TERM_BEFORE=$(grep -h '^node=' "$WORK/n1.log" | tail -n1 | sed -n 's/.* term=\([0-9]*\).*/\1/p')
log "5. node 4: a cluster-CA certificate, the wrong secret"
"$PAL" certs issue --dir "$C" --node node-4 --ip 10.77.0.4 >/dev/null
cat > "$C/node-4/palisade.toml" <<EOF
cluster_name = "raft-netns"
node_id = "node-4"
listen = "10.77.0.4:7401"
shared_secret_file = "$WORK/other/secret"
tls_enabled = true
tls_trust = "ca"
tls_cert_file = "$C/node-4/tls.crt"
tls_key_file = "$C/node-4/tls.key"
tls_ca_file = "$C/node-4/ca.crt"
EOF
ip netns exec "${NS[3]}" "$KV" --config "$C/node-4/palisade.toml" --id 4 \
    --peers "$PEERS,4=10.77.0.4:7401" --init --run-for 8 > "$WORK/n4.log" 2>&1 &
PIDS+=($!)
sleep 8
TERM_AFTER=$(grep -h '^node=' "$WORK/n1.log" | tail -n1 | sed -n 's/.* term=\([0-9]*\).*/\1/p')
T4=$(grep -h '^node=' "$WORK/n4.log" | tail -n1 | sed -n 's/.* term=\([0-9]*\).*/\1/p')

log "waiting for the nodes to finish"
for p in "${PIDS[@]}"; do wait "$p" || true; done
PIDS=()

cat "$WORK"/n[123].acked | sort -u > "$WORK/acked"
LOST=0
for i in 1 2 3; do
    sort -u "$WORK/n$i.keys" > "$WORK/k$i"
    missing=$(comm -23 "$WORK/acked" "$WORK/k$i" | wc -l)
    LOST=$(( LOST > missing ? LOST : missing ))
done
ROT_FAILED=0
for i in 1 2 3; do
    while read -r _ _ _ _ at; do
        [ "$at" -ge "$ROT" ] && [ "$at" -le "$ROT_END" ] && ROT_FAILED=$((ROT_FAILED + 1))
    done < <(grep -h "^write failed" "$WORK/n$i.log" || true)
done
ALL_FAILED=$(cat "$WORK"/n[123].log | grep -c "^write failed" || true)
echo
echo "writes committed: $(wc -l < "$WORK/acked"), lost: $LOST"
echo "election after the cut: $(( ELECTED - CUT )) ms (node $L cut, node $NEW elected)"
echo "writes failed: $ALL_FAILED in all (those on the cut leader time out), $ROT_FAILED during the rotation"
echo "intruder: its term $T4; cluster term $TERM_BEFORE -> $TERM_AFTER"
echo "reloads taken: $(cat "$WORK"/n[123].log | grep -c '^reload taken' || true)"
[ "$LOST" = 0 ] && [ "$ROT_FAILED" = 0 ] && [ "$TERM_BEFORE" = "$TERM_AFTER" ]
