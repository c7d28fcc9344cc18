# shellcheck shell=bash disable=SC2034  # FAILED and WATCHDOG_PID belong to the sourcing script
# Shared by the sidecar scripts (sourced, not run): timing, PASS/FAIL lines, bounded
# waits and the watchdog. The sourcing script sets MAX_S and FAILED first, and its EXIT
# trap cleans up when the watchdog signals it.

now() { date +%s%3N; }
T0=$(now)
log() { echo "[$(( $(now) - T0 )) ms] $*"; }
pass() { log "PASS: $*"; }
fail() { log "FAIL: $*"; FAILED=1; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls every 0.2 s; 0 once it succeeds, 1 at the timeout.
wait_for() {
    local secs=$1 what=$2; shift 2
    local end=$(( $(now) + secs * 1000 ))
    while [ "$(now)" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "timed out after ${secs}s waiting for: $what"
    return 1
}

# The watchdog: the run is bounded however a step hangs (it signals the script, whose
# trap cleans up). Its sleep is killed with it, so no orphan holds stdout open.
start_watchdog() {
    local name; name=$(basename "$0")
    (
        trap 'kill "$sp" 2>/dev/null; exit 0' TERM
        sleep "$MAX_S" & sp=$!
        wait "$sp"
        echo "$name: watchdog: over ${MAX_S}s, stopping"
        kill -TERM $$
    ) &
    WATCHDOG_PID=$!
}
