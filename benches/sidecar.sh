#!/usr/bin/env bash
# palisade node forwards beside stunnel and spiped: the same loopback workload through each.
#
#   benches/sidecar.sh            (from the workspace root; as root it runs in its own
#                                  network namespace, so no port clashes with the host)
#
# One echo server (cli/examples/sidecar_load.rs, `echo`) on 127.0.0.1:9000, reached
#   direct           127.0.0.1:9000
#   palisade         127.0.0.1:9101 -> node-a [[forward]] => link (mutual TLS 1.3 + secret)
#                    => node-b [[service]] -> echo            (two `palisade node` processes)
#   stunnel          127.0.0.1:9201 -> stunnel client => TLS 1.3, mutual certificates
#                    (openssl-made EC P-256) => stunnel server -> echo
#   spiped           127.0.0.1:9301 -> spiped -e => spiped -d -> echo  (defaults: a DH
#                    handshake per connection, keep-alives)
# and measured with the same client (sidecar_load):
#   RSS per 1,000 idle connections: the sum of both tunnel ends' VmRSS before and after
#     $IDLE connections (each made one round trip) are held, scaled to 1,000; measured
#     first, on fresh processes;
#   p50 / p99 added latency of a 64 B request/response: through the tunnel minus direct,
#     the paths' round trips taken in turn (the median over 5 rounds), and the ends'
#     context switches per round trip;
#   bulk: one stream of 64 KiB writes, echoed back, MiB/s read back;
#   connections/s: connect, one 64 B request/response, close, $CONC at once.
# Prints one table with the ratio palisade / best of the others (and which way is better).
# Release builds. Numbers depend on the machine: compare ratios, not absolutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=${SIDECAR_SECS:-3}          # per throughput / connection-rate measurement
CONC=${SIDECAR_CONC:-16}         # connections in flight in the connection-rate test
LAT_COUNT=${SIDECAR_LAT_COUNT:-2000}   # 64 B round trips per path per round
LAT_ROUNDS=${SIDECAR_LAT_ROUNDS:-5}
# Idle connections held at once. 250, not 1,000: palisade node's forwarding allows 256
# streams per link (cli/src/forward/mux.rs `Limits::max_streams`, not configurable), and
# the 257th connection is reset. Every tunnel is measured with the same count; the table
# scales the RSS delta to 1,000.
IDLE=${SIDECAR_IDLE:-250}
NS=pal-sidecar-bench

# As root: run the rest inside a fresh network namespace (its own loopback and ports).
if [ "$(id -u)" = 0 ] && [ -z "${SIDECAR_INNER:-}" ] && command -v ip >/dev/null; then
    ip netns del "$NS" 2>/dev/null || true
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    rc=0
    ip netns exec "$NS" env SIDECAR_INNER=1 "$0" "$@" || rc=$?
    ip netns del "$NS" 2>/dev/null || true
    exit "$rc"
fi

need() { # command package
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; } || true
    fi
    command -v "$1" >/dev/null || { echo "sidecar.sh: skipped: $1 (package $2) is not installed"; exit 77; }
}
need stunnel4 stunnel4
need spiped spiped
need openssl openssl

cargo build -q --release -p palisade-cli --bin palisade --example sidecar_load
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PAL=$TARGET/release/palisade
LOAD=$TARGET/release/examples/sidecar_load
WORK=$(mktemp -d /tmp/pal-sidecar-bench.XXXXXX)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
declare -A PID
IDLE_PID=""

cleanup() {
    [ -n "$IDLE_PID" ] && kill "$IDLE_PID" 2>/dev/null || true
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_LOGS:-}" ] && echo "logs kept in $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { # port: until it accepts, 10 s at most
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 10 s"; return 1
}

# --- the echo server ---
"$LOAD" echo 127.0.0.1:9000 > "$WORK/echo.log" 2>&1 & PID[echo]=$!
wait_port 9000

# --- palisade: certificates and secret from `certs init`, a forward and a service ---
"$PAL" certs init --dir "$WORK/pki" --cluster bench --nodes node-a,node-b --base-port 7501 >/dev/null
sed -i 's|^seeds = .*|seeds = []|' "$WORK/pki/node-a/palisade.toml" "$WORK/pki/node-b/palisade.toml"
cat >> "$WORK/pki/node-a/palisade.toml" <<'EOF'

[[forward]]
listen = "127.0.0.1:9101"
peer = "node-b"
service = "echo"

[peers]
node-b = "127.0.0.1:7502"
EOF
cat >> "$WORK/pki/node-b/palisade.toml" <<'EOF'

[[service]]
name = "echo"
target = "127.0.0.1:9000"
allow = ["node-a"]
EOF
for n in a b; do
    "$PAL" node --config "$WORK/pki/node-$n/palisade.toml" > "$WORK/palisade-$n.log" 2>&1 & PID[pal-$n]=$!
done

# --- stunnel: a CA and two EC P-256 certificates, mutual verification, TLS 1.3 ---
S=$WORK/stunnel; mkdir -p "$S"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$S/ca.key" -out "$S/ca.crt" 2>/dev/null
for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
        -keyout "$S/$who.key" -out "$S/$who.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$who" > "$S/$who.ext"
    openssl x509 -req -in "$S/$who.csr" -CA "$S/ca.crt" -CAkey "$S/ca.key" -CAcreateserial -days 2 \
        -extfile "$S/$who.ext" -out "$S/$who.crt" 2>/dev/null
done
cat > "$S/client.conf" <<EOF
foreground = yes
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[bench]
client = yes
accept = 127.0.0.1:9201
connect = 127.0.0.1:9202
cert = $S/client.crt
key = $S/client.key
CAfile = $S/ca.crt
verifyChain = yes
checkHost = server
sslVersionMin = TLSv1.3
EOF
cat > "$S/server.conf" <<EOF
foreground = yes
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[bench]
accept = 127.0.0.1:9202
connect = 127.0.0.1:9000
cert = $S/server.crt
key = $S/server.key
CAfile = $S/ca.crt
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
EOF
stunnel4 "$S/server.conf" > "$WORK/stunnel-server.log" 2>&1 & PID[stunnel-s]=$!
stunnel4 "$S/client.conf" > "$WORK/stunnel-client.log" 2>&1 & PID[stunnel-c]=$!

# --- spiped: one 32-byte key, an encrypting and a decrypting end ---
head -c 32 /dev/urandom > "$WORK/spiped.key"
spiped -F -e -s '[127.0.0.1]:9301' -t '[127.0.0.1]:9302' -k "$WORK/spiped.key" -n 0 -p /dev/null \
    > "$WORK/spiped-e.log" 2>&1 & PID[spiped-e]=$!
spiped -F -d -s '[127.0.0.1]:9302' -t '[127.0.0.1]:9000' -k "$WORK/spiped.key" -n 0 -p /dev/null \
    > "$WORK/spiped-d.log" 2>&1 & PID[spiped-d]=$!

for p in 9101 9201 9301; do wait_port "$p"; done
# palisade's forward port opens at start; its connections need the link: wait for the join.
for _ in $(seq 1 100); do grep -q "joined node-b" "$WORK/palisade-a.log" && break; sleep 0.1; done
grep -q "joined node-b" "$WORK/palisade-a.log" || { echo "node-a never joined node-b"; tail "$WORK"/palisade-*.log; exit 1; }

NAMES=(direct palisade stunnel spiped)
declare -A PORT=([direct]=9000 [palisade]=9101 [stunnel]=9201 [spiped]=9301)
declare -A ENDS=([palisade]="pal-a pal-b" [stunnel]="stunnel-c stunnel-s" [spiped]="spiped-e spiped-d")
declare -A R   # results: R[metric,name]

# One round trip through each path first: every end is up and every path works.
for n in "${NAMES[@]}"; do "$LOAD" latency "127.0.0.1:${PORT[$n]}" 10 >/dev/null || { echo "$n: no echo"; exit 1; }; done

rss_kib() { # the sum of VmRSS of the named ends
    local e sum=0 v
    for e in $1; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/${PID[$e]}/status"); sum=$((sum + v))
    done
    echo "$sum"
}
cpu_ms() { # CPU time (user + system) of the named ends so far, ms
    local e sum=0 t
    for e in $1; do
        t=$(awk '{ print $14 + $15 }' "/proc/${PID[$e]}/stat"); sum=$((sum + t))
    done
    echo $(( sum * 1000 / $(getconf CLK_TCK) ))
}
field() { sed -n "s/.*$1=\\([0-9.]*\\).*/\\1/p"; }

# --- RSS per 1,000 idle connections (first, on processes that have not yet been loaded) ---
for n in palisade stunnel spiped; do
    before=$(rss_kib "${ENDS[$n]}")
    coproc IDLEC { "$LOAD" idle "127.0.0.1:${PORT[$n]}" "$IDLE"; }
    IDLE_PID=$IDLEC_PID
    read -r -t 60 line <&"${IDLEC[0]}" || { echo "$n: $IDLE idle connections not ready within 60 s"; exit 1; }
    sleep 1   # let both ends settle (buffers allocated for the round trip stay in use)
    after=$(rss_kib "${ENDS[$n]}")
    fd=${IDLEC[1]}
    exec {fd}>&-   # close its stdin: it drops the connections and exits
    wait "$IDLE_PID" 2>/dev/null || true; IDLE_PID=""
    R[rss,$n]=$(awk -v a="$after" -v b="$before" -v c="$IDLE" 'BEGIN { printf "%.0f", (a - b) * 1000 / c }')
    echo "$n: $line; RSS of both ends $before -> $after KiB"
    sleep 1
done

# --- latency (64 B request/response), direct too ---
# One connection per path, the round trips taken in turn (direct, palisade, stunnel,
# spiped, direct, ...), so every path sees the same moments of a shared machine's load;
# $LAT_ROUNDS such rounds. A path's added latency in a round is its p50 (p99) minus
# direct's in that round; the table shows the median over rounds. Also the tunnel ends'
# context switches per round trip (every thread's, from /proc).
ctx_switches() {
    local e
    for e in $1; do cat /proc/"${PID[$e]}"/task/*/status; done | awk '/ctxt_switches/ { s += $2 } END { print s }'
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A ADD50 ADD99 ABS50 ABS99 X0
ADDRS=""
for n in "${NAMES[@]}"; do ADDRS+="${ADDRS:+,}127.0.0.1:${PORT[$n]}"; done
for round in $(seq 1 "$LAT_ROUNDS"); do
    for n in palisade spiped; do X0[$n]=$(ctx_switches "${ENDS[$n]}"); done
    out=$("$LOAD" latency "$ADDRS" "$LAT_COUNT")
    for n in "${NAMES[@]}"; do
        line=$(echo "$out" | grep "^addr=127.0.0.1:${PORT[$n]} ")
        p50=$(echo "$line" | field p50_us); p99=$(echo "$line" | field p99_us)
        ABS50[$n]+=" $p50"; ABS99[$n]+=" $p99"
        if [ "$n" = direct ]; then
            d50=$p50; d99=$p99
        else
            ADD50[$n]+=" $(awk -v a="$p50" -v b="$d50" 'BEGIN { printf "%.1f", a - b }')"
            ADD99[$n]+=" $(awk -v a="$p99" -v b="$d99" 'BEGIN { printf "%.1f", a - b }')"
            if [ "$n" = stunnel ]; then
                # stunnel serves each connection on its own thread, gone (with its
                # counts) from /proc by the time the run ends: not measurable this way.
                R[ctx,$n]=n/a
            else
                x1=$(ctx_switches "${ENDS[$n]}")
                R[ctx,$n]=$(awk -v d=$((x1 - X0[$n])) -v c="$LAT_COUNT" 'BEGIN { printf "%.1f", d / (c + 100) }')
            fi
            line="$line; both ends' context switches per round trip ${R[ctx,$n]}"
        fi
        echo "$n latency, round $round: $line"
    done
done
# shellcheck disable=SC2086 # the lists are space-separated numbers
for n in "${NAMES[@]}"; do
    R[p50,$n]=$(median ${ABS50[$n]}); R[p99,$n]=$(median ${ABS99[$n]})
    [ "$n" = direct ] && continue
    R[p50add,$n]=$(median ${ADD50[$n]}); R[p99add,$n]=$(median ${ADD99[$n]})
done

# --- bulk throughput (64 KiB writes, echoed) ---
# Also the tunnel ends' CPU time per MiB: on a shared machine it tells a slower tunnel
# that burns more CPU per byte from one that waits.
for n in "${NAMES[@]}"; do
    [ "$n" = direct ] || c0=$(cpu_ms "${ENDS[$n]}")
    out=$("$LOAD" bulk "127.0.0.1:${PORT[$n]}" "$SECS")
    R[bulk,$n]=$(echo "$out" | field mib_per_s)
    if [ "$n" != direct ]; then
        c1=$(cpu_ms "${ENDS[$n]}")
        # The warm-up half second is in the CPU time but not in the bytes: per MiB read
        # back over the whole run (bytes / secs * (secs + 0.5)).
        R[bulkcpu,$n]=$(awk -v c=$((c1 - c0)) -v m="${R[bulk,$n]}" -v s="$SECS" 'BEGIN { printf "%.2f", c / (m * (s + 0.5)) }')
        out="$out; both ends' CPU ${R[bulkcpu,$n]} ms per MiB echoed"
    fi
    echo "$n bulk: $out"
    sleep 1
done

# --- new connections per second (connect, 64 B request/response, close) ---
for n in "${NAMES[@]}"; do
    [ "$n" = direct ] || c0=$(cpu_ms "${ENDS[$n]}")
    out=$("$LOAD" connect "127.0.0.1:${PORT[$n]}" "$SECS" "$CONC")
    R[conn,$n]=$(echo "$out" | field conn_per_s)
    if [ "$n" != direct ]; then
        c1=$(cpu_ms "${ENDS[$n]}")
        R[conncpu,$n]=$(awk -v c=$((c1 - c0)) -v k="$(echo "$out" | field connections)" 'BEGIN { printf "%.0f", c * 1000 / k }')
        out="$out; both ends' CPU ${R[conncpu,$n]} µs per connection"
    fi
    errs=$(echo "$out" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
    [ "${errs:-0}" = 0 ] || echo "WARNING: $n: $errs connection(s) failed or timed out"
    echo "$n connect: $out"
    sleep 2   # TIME_WAIT sockets of one run do not crowd the next
done

# --- the table: palisade / best of stunnel and spiped ---
row() { # label metric better(higher|lower)
    local label=$1 m=$2 better=$3 best bestname
    if [ "${R[$m,stunnel]}" = n/a ]; then best=${R[$m,spiped]}
    else best=$(awk -v a="${R[$m,stunnel]}" -v b="${R[$m,spiped]}" -v h="$better" \
        'BEGIN { if ((h == "higher") == (a >= b)) print a; else print b }'); fi
    [ "$best" = "${R[$m,stunnel]}" ] && bestname=stunnel || bestname=spiped
    local ratio
    ratio=$(awk -v p="${R[$m,palisade]}" -v b="$best" 'BEGIN { if (b <= 0) print "n/a"; else printf "%.2f", p / b }')
    printf '| %s | %s | %s | %s | %s | %s× (%s) | %s |\n' "$label" "${R[$m,direct]:--}" \
        "${R[$m,palisade]}" "${R[$m,stunnel]}" "${R[$m,spiped]}" "$ratio" "$bestname" "$better"
}
R[rss,direct]=-; R[ctx,direct]=-; R[conncpu,direct]=-; R[bulkcpu,direct]=-; R[p50add,direct]=-; R[p99add,direct]=-
echo
echo "sidecar bench: ${SECS}s per throughput run, $CONC connections in flight, $LAT_ROUNDS x $LAT_COUNT round trips per path, $IDLE idle connections; $(nproc) CPU(s), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| metric | direct | palisade | stunnel | spiped | palisade / best other | better |"
echo "|---|---|---|---|---|---|---|"
row "new connections/s (connect, 64 B echo, close)" conn higher
row "bulk, 64 KiB writes echoed (MiB/s)" bulk higher
row "  both ends' CPU per connection (µs)" conncpu lower
row "  both ends' CPU per MiB echoed (ms)" bulkcpu lower
row "RSS per 1,000 idle connections, both ends (KiB)" rss lower
row "p50 added latency, 64 B echo (µs)" p50add lower
row "p99 added latency, 64 B echo (µs)" p99add lower
row "  both ends' context switches per round trip" ctx lower
echo
echo "(direct p50 ${R[p50,direct]} µs, p99 ${R[p99,direct]} µs, medians over rounds; added = through the tunnel minus direct in the same round, the median over $LAT_ROUNDS rounds, the paths' round trips taken in turn)"
