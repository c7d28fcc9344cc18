#!/usr/bin/env bash
# A 3-member etcd cluster whose peer traffic goes only through `palisade node` forwards,
# across three network namespaces.
#
#   sudo integrations/sidecar/etcd_netns.sh        (from the workspace root; needs root)
#
# Namespaces pal-etcd-1..3 each hold one palisade node on 10.78.0.N:7401 (a veth pair to a
# bridge in the namespace pal-etcd-br; certificates from `palisade certs init` / `certs
# issue` with the node's IP SAN, one shared secret) and one etcd member. Every etcd member
# binds loopback only: clients on 127.0.0.1:2379, peers on 127.0.0.1:238N, and
# `--initial-cluster n1=http://127.0.0.1:2381,n2=...:2382,n3=...:2383` is the same in every
# namespace. In namespace N the palisade node forwards 127.0.0.1:238M (M != N) to node-M's
# service `etcd-peer`, which node-M connects to its own 127.0.0.1:238M. So the only way
# between members is a palisade link. Steps, each printed PASS or FAIL:
#   1. a put on every member is read back from every member;
#   2. no plaintext path: every listener in every namespace is loopback or palisade's
#      port, every connection on the veth is a palisade link, etcd's ports are not
#      reachable from another namespace;
#   3. namespace 3's interface is cut (`ip link set eth0 down`): writes on member 1 go on;
#      restored: member 3 reads what was written during the cut;
#   4. palisade node 2 is killed and restarted: writes recover, member 2 catches up;
#   5. while a writer puts every 100 ms: the shared secret rotates (add, switch, remove)
#      and every node certificate is re-issued; at most 2 failed writes;
#   6. node-3 is revoked with `palisade certs revoke` alone (its certificate and its node
#      id: the links it joined before step 5 carry its previous, unlisted certificate;
#      taken at the next 1 s reload): writes on members 1 and 2 go on, member 3 can no longer
#      reach a quorum, nodes 1 and 2 log the revocation and refuse node-3's redials;
#   7. step 2's checks again.
# Exits non-zero if a step fails; everything it made is removed on any exit. Bounded:
# every wait has a timeout and a watchdog ends the whole run after $ETCD_NETNS_MAX_S s.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "etcd_netns.sh: skipped: needs root (network namespaces)"; exit 77; }
command -v ip >/dev/null || { echo "etcd_netns.sh: skipped: needs iproute2's ip"; exit 77; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MAX_S=${ETCD_NETNS_MAX_S:-240}

# --- packages: etcd and etcdctl (Debian: etcd-server, etcd-client), ss (iproute2) ---
need_packages() {
    command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v ss >/dev/null && return 0
    if command -v apt-get >/dev/null; then
        echo "installing etcd-server etcd-client iproute2"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client iproute2 >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client iproute2 >/dev/null; } \
            || true
    fi
    command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v ss >/dev/null \
        || { echo "etcd_netns.sh: skipped: etcd/etcdctl not installed and apt-get could not install them"; exit 77; }
}
need_packages
export ETCDCTL_API=3

cargo build -q -p palisade-cli
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PAL=$TARGET/debug/palisade
WORK=$(mktemp -d /tmp/pal-etcd-netns.XXXXXX)
NS=(pal-etcd-1 pal-etcd-2 pal-etcd-3)
BR=pal-etcd-br
C=$WORK/certs
declare -A PAL_PID ETCD_PID
WRITER_PID=""
WATCHDOG_PID=""
FAILED=0

cleanup() {
    local rc=$?
    [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null || true
    [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null || true
    for p in "${PAL_PID[@]}" "${ETCD_PID[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NS[@]}" "$BR"; do ip netns del "$n" 2>/dev/null || true; done
    if [ "$rc" != 0 ] && [ -z "${KEEP_LOGS:-}" ]; then
        # The logs are the only record of what went wrong: show their tails before removal.
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

# --- network: 3 namespaces, a bridge, veth pairs ---
for n in "${NS[@]}" "$BR"; do ip netns del "$n" 2>/dev/null || true; done   # a previous run killed -9
ip netns add "$BR"
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
for i in 1 2 3; do
    ns=${NS[$((i - 1))]}
    ip netns add "$ns"
    ip link add "pe$i-eth0" type veth peer name "pe$i-br"
    ip link set "pe$i-eth0" netns "$ns" name eth0
    ip link set "pe$i-br" netns "$BR"
    ip -n "$BR" link set "pe$i-br" master br0 up
    ip -n "$ns" addr add "10.78.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done

# --- certificates, secret, node settings: as an operator makes them ---
"$PAL" certs init --dir "$C" --cluster etcd-netns --nodes node-1,node-2,node-3 >/dev/null
: > "$C/accepted"   # the rotation's other secret: empty between rotations
node_settings() { # i: the node's IP SAN, its address, a peer table, the forwards and its service
    local i=$1 node=node-$1 j seeds=""
    "$PAL" certs issue --dir "$C" --node "$node" --ip "10.78.0.$i" >/dev/null
    for j in 1 2 3; do [ "$j" = "$i" ] || seeds="$seeds${seeds:+, }\"10.78.0.$j:7401\""; done
    sed -i -e "s|^listen = .*|listen = \"10.78.0.$i:7401\"|" -e "s|^seeds = .*|seeds = [$seeds]|" \
        "$C/$node/palisade.toml"
    {
        printf 'reload_interval = "1s"\naccepted_secret_files = ["%s"]\n' "$C/accepted"
        for j in 1 2 3; do
            [ "$j" = "$i" ] && continue
            printf '\n[[forward]]\nlisten = "127.0.0.1:238%s"\npeer = "node-%s"\nservice = "etcd-peer"\n' "$j" "$j"
        done
        printf '\n[[service]]\nname = "etcd-peer"\ntarget = "127.0.0.1:238%s"\nallow = ["node-*"]\n' "$i"
        printf '\n[peers]\n'
        for j in 1 2 3; do [ "$j" = "$i" ] || printf 'node-%s = "10.78.0.%s:7401"\n' "$j" "$j"; done
    } >> "$C/$node/palisade.toml"
}
for i in 1 2 3; do node_settings "$i"; done
"$PAL" check --config "$C/node-1/palisade.toml" > "$WORK/check.log" 2>&1 \
    || { log "palisade check refused node-1's settings:"; cat "$WORK/check.log"; exit 1; }

start_palisade() {
    local i=$1
    ip netns exec "${NS[$((i - 1))]}" "$PAL" node --config "$C/node-$i/palisade.toml" \
        >> "$WORK/palisade-$i.log" 2>&1 &
    PAL_PID[$i]=$!
}
start_etcd() {
    local i=$1
    ip netns exec "${NS[$((i - 1))]}" etcd --name "n$i" --data-dir "$WORK/etcd-$i" \
        --listen-peer-urls "http://127.0.0.1:238$i" --initial-advertise-peer-urls "http://127.0.0.1:238$i" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --initial-cluster "n1=http://127.0.0.1:2381,n2=http://127.0.0.1:2382,n3=http://127.0.0.1:2383" \
        --initial-cluster-token pal-etcd-netns --initial-cluster-state new \
        --heartbeat-interval 100 --election-timeout 1000 \
        >> "$WORK/etcd-$i.log" 2>&1 &
    ETCD_PID[$i]=$!
}
# etcdctl in member i's namespace (its client port is 127.0.0.1:2379 there).
ctl() {
    local i=$1; shift
    ip netns exec "${NS[$((i - 1))]}" etcdctl --endpoints http://127.0.0.1:2379 \
        --dial-timeout 2s --command-timeout 3s "$@"
}
get_value() { ctl "$1" get --print-value-only "$2" 2>/dev/null; }
value_is() { [ "$(get_value "$1" "$2")" = "$3" ]; }
joined_count() { grep -c "joined node-" "$WORK/palisade-$1.log" || true; }

for i in 1 2 3; do start_palisade "$i"; done
links_up() { local i; for i in 1 2 3; do [ "$(joined_count "$i")" -ge 2 ] || return 1; done; }
wait_for 20 "every palisade node joined both peers" links_up || exit 1
log "palisade: 3 nodes joined each other (mutual TLS, IP SANs, shared secret)"
for i in 1 2 3; do start_etcd "$i"; done
healthy() { ctl "$1" endpoint health; }
for i in 1 2 3; do wait_for 40 "etcd member $i healthy" healthy "$i" || exit 1; done
log "etcd: 3 members healthy"

# --- 1. put on every member, read back from every member ---
step1() {
    local i j ok=1
    for i in 1 2 3; do ctl "$i" put "from-$i" "value-$i" >/dev/null || { ok=0; log "put on member $i failed"; }; done
    for i in 1 2 3; do for j in 1 2 3; do
        value_is "$j" "from-$i" "value-$i" || { ok=0; log "member $j does not read from-$i"; }
    done; done
    [ "$ok" = 1 ] && pass "1. put on each member, read back from every member (9 reads)" \
        || fail "1. put/get on every member"
}
step1

# --- 2. no plaintext path between members ---
step2() { # label: "2." at the start, "7." again after the cut, restart, rotations and revocation
    local label=$1 i ok=1 bad
    for i in 1 2 3; do
        # Listeners: loopback, or palisade's port on the veth address; nothing else.
        bad=$(ip netns exec "${NS[$((i - 1))]}" ss -Htln | awk -v me="10.78.0.$i:7401" \
            '$4 !~ /^127\.0\.0\.1:/ && $4 != me { print $4 }')
        [ -z "$bad" ] || { ok=0; log "namespace $i listens beyond loopback and palisade: $bad"; }
        # etcd binds loopback only.
        bad=$(ip netns exec "${NS[$((i - 1))]}" ss -Htlnp | grep '"etcd"' | awk '$4 !~ /^127\.0\.0\.1:/ { print $4 }')
        [ -z "$bad" ] || { ok=0; log "etcd $i binds $bad"; }
        # Connections on the veth: one end is palisade's port 7401.
        bad=$(ip netns exec "${NS[$((i - 1))]}" ss -Htn state established | awk \
            '$3 ~ /^10\.78\./ && $3 !~ /:7401$/ && $4 !~ /:7401$/ { print $3 " " $4 }')
        [ -z "$bad" ] || { ok=0; log "namespace $i has non-palisade connections on the veth: $bad"; }
    done
    # From namespace 2, member 1's ports on its veth address are closed.
    local port
    for port in 2379 2381; do
        if ip netns exec "${NS[1]}" timeout 2 bash -c "exec 3<>/dev/tcp/10.78.0.1/$port" 2>/dev/null; then
            ok=0; log "10.78.0.1:$port is reachable from namespace 2"
        fi
    done
    local streams
    streams=$(ip netns exec "${NS[0]}" ss -Htn state established | awk '$3 ~ /^10\.78\./' | wc -l)
    [ "$ok" = 1 ] && pass "$label no plaintext path: etcd binds loopback only, $streams veth connection(s) in namespace 1 all palisade (:7401), etcd ports unreachable across namespaces" \
        || fail "$label a plaintext path exists"
}
step2 "2."

# --- the writer: a put on member 1 every 100 ms, one line per attempt ---
# "ok|fail <unix ms> <n>" in writes.log; steps count the failures in their time window.
writer() {
    local n=0 t
    while :; do
        n=$((n + 1)); t=$(now)
        if ctl 1 put "w-$n" "$n" >/dev/null 2>&1; then echo "ok $t $n"; else echo "fail $t $n"; fi
        sleep 0.1
    done
}
writer > "$WORK/writes.log" 2>&1 &
WRITER_PID=$!
# counts OUTCOME FROM_MS TO_MS: writes with that outcome started in [FROM, TO].
counts() { awk -v o="$1" -v a="$2" -v b="$3" '$1 == o && $2 >= a && $2 <= b' "$WORK/writes.log" | wc -l; }
last_ok_key() { awk '$1 == "ok" { k = $3 } END { print k }' "$WORK/writes.log"; }
sleep 2

# --- 3. cut namespace 3 off, restore it ---
step3() {
    local cut restored key ok=1
    cut=$(now)
    ip -n "${NS[2]}" link set eth0 down
    log "3. cut: ip link set eth0 down in ${NS[2]}"
    sleep 6
    restored=$(now)
    # Member 3 may have led: allow an election (3 s), then writes on member 1 must go on.
    local later_ok later_fail
    later_ok=$(counts ok $((cut + 3000)) "$restored"); later_fail=$(counts fail $((cut + 3000)) "$restored")
    key=$(last_ok_key)
    ip -n "${NS[2]}" link set eth0 up
    log "   restored; during the cut (after 3 s): $later_ok writes ok, $later_fail failed; last written w-$key"
    [ "$later_ok" -gt 0 ] && [ "$later_fail" = 0 ] || { ok=0; log "writes did not go on during the cut"; }
    wait_for 30 "member 3 reads w-$key" value_is 3 "w-$key" "$key" || ok=0
    [ "$ok" = 1 ] && pass "3. link cut: writes went on with 2 members; after restore member 3 read w-$key ($(( $(now) - restored )) ms)" \
        || fail "3. link cut and restore"
}
step3

# --- 4. kill palisade node 2 and restart it ---
step4() {
    local killed key ok=1 fails
    killed=$(now)
    kill -9 "${PAL_PID[2]}"; wait "${PAL_PID[2]}" 2>/dev/null || true
    log "4. killed palisade node 2 (SIGKILL)"
    sleep 3
    start_palisade 2
    log "   restarted palisade node 2"
    sleep 1
    key=$(last_ok_key)
    wait_for 30 "member 2 reads a write made after node 2's restart" value_is 2 "w-$key" "$key" || ok=0
    # Writes on member 1 must recover: 10 in a row succeed.
    local since
    since=$(now)
    wait_for 30 "10 writes in a row" bash -c "[ \$(awk -v a=$since '\$2 >= a' '$WORK/writes.log' | tail -n 10 | grep -c '^ok') = 10 ]" || ok=0
    fails=$(counts fail "$killed" "$(now)")
    [ "$ok" = 1 ] && pass "4. palisade node 2 killed and restarted: member 2 caught up (w-$key), writes recovered ($fails failed meanwhile)" \
        || fail "4. palisade node restart"
}
step4

# --- 5. secret and certificate rotation under the writer ---
# Secret: the three steps of README "Rotation without downtime", by file contents only,
# each written whole (mv) so no node reads half a file; 3 s apart, as every node reloads
# every 1 s. Then a new certificate and key for every node (`certs issue`).
step5() {
    local from to fails oks newsecret=$WORK/new-secret reloads_before reloads_after
    from=$(now)
    reloads_before=$(cat "$WORK"/palisade-*.log | grep -c 'reloaded (files)' || true)
    put_file() { cp "$1" "$2.tmp" && mv "$2.tmp" "$2"; }
    "$PAL" secret generate --out "$newsecret" >/dev/null
    log "5. secret rotation: new key id $("$PAL" secret id --file "$newsecret" 2>/dev/null | grep -o '[0-9a-f]\{16\}' | head -n1)"
    put_file "$newsecret" "$C/accepted"; sleep 3                                  # 1: add
    cp "$C/secret" "$WORK/old-secret"
    put_file "$newsecret" "$C/secret"; put_file "$WORK/old-secret" "$C/accepted"; sleep 3   # 2: switch
    : > "$WORK/empty"; put_file "$WORK/empty" "$C/accepted"; sleep 3              # 3: remove
    log "   certificate rotation: certs issue for node-1..3"
    local i
    for i in 1 2 3; do "$PAL" certs issue --dir "$C" --node "node-$i" --ip "10.78.0.$i" >/dev/null; done
    sleep 3
    to=$(now)
    fails=$(counts fail "$from" "$to"); oks=$(counts ok "$from" "$to")
    reloads_after=$(cat "$WORK"/palisade-*.log | grep -c 'reloaded (files)' || true)
    log "   during the rotations: $oks writes ok, $fails failed; node reloads taken: $((reloads_after - reloads_before))"
    # New links must now join under the new secret: the nodes' key id is the new one.
    local newid; newid=$("$PAL" secret id --file "$newsecret" 2>/dev/null | grep -o '[0-9a-f]\{16\}' | head -n1)
    local ok=1
    [ "$fails" -le 2 ] || { ok=0; log "more than 2 writes failed during the rotations"; }
    [ "$oks" -gt 20 ] || { ok=0; log "too few writes went through during the rotations"; }
    [ $((reloads_after - reloads_before)) -ge 9 ] || { ok=0; log "the nodes did not take every rotation step"; }
    for i in 1 2 3; do
        grep 'reloaded (files)' "$WORK/palisade-$i.log" | tail -n 1 | grep -q "key id $newid" \
            || { ok=0; log "node-$i did not end on key id $newid"; }
    done
    [ "$ok" = 1 ] && pass "5. secret (add, switch, remove) and certificates rotated under load: $fails of $((oks + fails)) writes failed" \
        || fail "5. rotation under load"
}
step5

# --- 6. revoke node-3: the cluster goes on with two ---
# README "Removing a node": `palisade certs revoke` lists node-3's current certificate
# (revocation file + CRL) and its node id. Its links to nodes 1 and 2 were joined before
# step 5 under its previous certificate, still valid and not listed, so it is the node-id
# entry that cuts them (a TLS session keeps the certificate it was made with): the
# command alone must remove the node.
step6() {
    local ok=1 i
    "$PAL" certs revoke --dir "$C" --node node-3 --reason "etcd_netns.sh step 6" > "$WORK/revoke.log"
    grep -q "node-id node-3" "$C/revocation.txt" || { ok=0; log "certs revoke wrote no node-id line"; }
    log "6. revoked node-3 (palisade certs revoke: its certificate and its node id); nodes reload every 1 s"
    # Nodes 1 and 2 close their links to node-3, naming the revocation.
    for i in 1 2; do
        wait_for 10 "node-$i closes node-3's link as revoked" \
            grep -q "link with node-3 ended: closed by this node: revoked" "$WORK/palisade-$i.log" || ok=0
    done
    local closed; closed=$(now)
    # node-3 redials and is refused (the redial's error in its own log, the refusal in theirs).
    wait_for 20 "node-3's redial refused" grep -Eq "dialing .*failed.*revok" "$WORK/palisade-3.log" || ok=0
    sleep 3
    ctl 1 put after-revoke yes >/dev/null || { ok=0; log "put on member 1 after the revocation failed"; }
    value_is 2 after-revoke yes || { ok=0; log "member 2 does not read after-revoke"; }
    # Member 3 cannot reach a quorum: a linearizable read there fails.
    if value_is 3 after-revoke yes; then ok=0; log "member 3 still reads the cluster's writes"; fi
    local now_ms wo wf refused
    now_ms=$(now)
    # Member 3 may have led: allow an election (2 s) after the links closed.
    wo=$(counts ok $((closed + 2000)) "$now_ms"); wf=$(counts fail $((closed + 2000)) "$now_ms")
    [ "$wo" -gt 0 ] && [ "$wf" = 0 ] || { ok=0; log "writes on member 1 after the revocation: $wo ok, $wf failed"; }
    refused=$(cat "$WORK/palisade-1.log" "$WORK/palisade-2.log" | grep -c "refused a link: .*revoked" || true)
    [ "$refused" -gt 0 ] || { ok=0; log "nodes 1 and 2 logged no refused link from node-3"; }
    [ "$ok" = 1 ] && pass "6. node-3 revoked: links closed by nodes 1 and 2, $refused redial(s) refused, writes go on with two ($wo ok, $wf failed after the links closed), member 3 cut off" \
        || fail "6. revocation"
}
step6
step2 "7. (again, at the end)"

kill "$WRITER_PID" 2>/dev/null || true; wait "$WRITER_PID" 2>/dev/null || true; WRITER_PID=""
echo
echo "writes: $(grep -c '^ok' "$WORK/writes.log" || true) ok, $(grep -c '^fail' "$WORK/writes.log" || true) failed in all (the cut and the restart included)"
echo "run time: $(( ($(now) - T0) / 1000 )) s"
if [ "$FAILED" = 0 ]; then echo "etcd_netns.sh: PASS"; else echo "etcd_netns.sh: FAIL"; exit 1; fi
