#!/usr/bin/env bash
# bench/run.sh — the whole benchmark suite: the in-process pipeline benchmark, the criterion
# microbenchmarks and the net_memif link benchmark against testpmd. Writes
# bench/results/latest.txt (every section's output, then all `key: value` lines) and, when
# python3 has matplotlib, docs/bench-mpps.png (bench/plot.py).
#
#   bench/run.sh            full run (~5 min on 2 cores)
#   bench/run.sh --smoke    each piece for a moment (CI: keeps the benchmarks working),
#                           and fails when a case's callgrind instruction count per packet
#                           exceeds bench/instr-budget.txt (bench/instr.sh, ~10 s);
#                           the link benchmark is skipped, with a note, when the machine
#                           lacks root, hugepages or dpdk-testpmd
#
# Environment: CARGO (cargo), CARGO_TARGET_DIR, FLOWS (pipeline flow counts, default
# 10k,1M,10M), ROUNDS / DURATION (link benchmark), RESULTS (output file).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1

CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${RESULTS:-$ROOT/bench/results/latest.txt}
mkdir -p "$(dirname "$RESULTS")"
TMP=$(mktemp -d /tmp/flowgate-bench-run.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

section() { printf '\n===== %s =====\n' "$*"; }

echo "flowgate benchmark suite: $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ $SMOKE = 1 ] && echo ' (smoke)')"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
echo "cpu: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

section build
$CARGO build --release 2>&1 | tail -n 2
$CARGO bench --no-run --bench pipeline --bench micro --bench latency 2>&1 | tail -n 2

{
    echo "# flowgate benchmark results $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ $SMOKE = 1 ] && echo ' (smoke)')"
    echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "# cpu: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores"
} > "$TMP/head.txt"

# --- 1. in-process pipeline ------------------------------------------------------------
section "pipeline (in-process, one core)"
if [ $SMOKE = 1 ]; then
    PIPE_ARGS=(--smoke --workers 2)
else
    PIPE_ARGS=(--flows "${FLOWS:-10k,1M,10M}" --seconds 3 --workers 2)
fi
$CARGO bench --bench pipeline -- "${PIPE_ARGS[@]}" 2>&1 | grep -v '^ *Running\|^ *Finished' | tee "$TMP/pipeline.txt"

# --- 1b. instructions per packet (callgrind) against bench/instr-budget.txt ----------------
# Deterministic (no timing): a regression fails the run (after the results are written).
section "instructions per packet (callgrind, budget bench/instr-budget.txt)"
INSTR_RC=0
bash "$HERE/instr.sh" 2>&1 | tee "$TMP/instr.txt" || INSTR_RC=1

# --- 2. criterion microbenchmarks --------------------------------------------------------
section "microbenchmarks (criterion)"
if [ $SMOKE = 1 ]; then
    # --test: every benchmark runs once (checks they work, measures nothing).
    $CARGO bench --bench micro -- --test 2>&1 | grep -v '^ *Running\|^ *Finished' | tee "$TMP/micro.txt"
else
    $CARGO bench --bench micro -- --warm-up-time 1 --measurement-time 3 --noplot 2>&1 |
        grep -v '^ *Running\|^ *Finished' | tee "$TMP/micro.txt"
fi
# criterion prints `name\n    time: [low median high]` (or on one line): key lines in ns.
awk '
    /^[a-z_]+\/[A-Za-z0-9_]+/ { name = $1 }
    /time:/ {
        s = $0; sub(/.*time: *\[/, "", s); sub(/\].*/, "", s)
        n = split(s, f, " ")
        if (n >= 6 && name != "") {
            v = f[3]; u = f[4]
            if (u == "ps") v /= 1000; else if (u == "us" || u == "µs") v *= 1000; else if (u == "ms") v *= 1e6
            k = name; gsub(/\//, "_", k)
            printf "micro_%s_ns: %.2f\n", k, v
        }
        name = ""
    }' "$TMP/micro.txt" > "$TMP/micro-keys.txt"

# --- 3. link benchmark --------------------------------------------------------------------
section "link (net_memif, testpmd flowgen)"
LINK_OK=1
why=""
if ! command -v dpdk-testpmd >/dev/null; then LINK_OK=0; why="dpdk-testpmd not installed"; fi
if [ "$(id -u)" != 0 ]; then LINK_OK=0; why="not root"; fi
if [ "$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)" = 0 ] && [ $SMOKE = 1 ]; then
    LINK_OK=0; why="no hugepages reserved"
fi
if [ $LINK_OK = 1 ]; then
    if [ $SMOKE = 1 ]; then
        LINK_ARGS=(--smoke)
    else
        LINK_ARGS=(--rounds "${ROUNDS:-3}" --duration "${DURATION:-5}")
    fi
    bash "$HERE/memif.sh" --flowgate "$TARGET_DIR/release/flowgate" "${LINK_ARGS[@]}" 2>&1 |
        tee "$TMP/link.txt" || { [ $SMOKE = 1 ] || exit 1; }
else
    echo "link benchmark skipped: $why" | tee "$TMP/link.txt"
    echo "route_vs_testpmd_macswap: n/a ($why)" >> "$TMP/link.txt"
    echo "nat_vs_testpmd_macswap: n/a ($why)" >> "$TMP/link.txt"
    echo "lb_vs_testpmd_macswap: n/a ($why)" >> "$TMP/link.txt"
    for k in route_2q_vs_testpmd_macswap_2q nat_2q_vs_testpmd_macswap_2q nat_2q_vs_ovs_dpdk_nat; do
        echo "$k: n/a ($why)" >> "$TMP/link.txt"
    done
fi

# --- 4. latency (our own TSC-stamping generator on memif) -----------------------------------
section "latency (net_memif, TSC-stamped, 10/50/90 % of the maximum rate)"
if [ $LINK_OK = 1 ]; then
    for mode in route nat; do
        LAT_ARGS=(--flowgate "$TARGET_DIR/release/flowgate" --mode "$mode")
        if [ $SMOKE = 1 ]; then LAT_ARGS+=(--smoke); else LAT_ARGS+=(--seconds "${DURATION:-5}"); fi
        timeout 120 $CARGO bench --bench latency -- "${LAT_ARGS[@]}" 2>&1 |
            grep -vE '^(EAL|TELEMETRY|rte_pmd_memif)' |
            sed -E "s/^(latency_[a-z0-9_]+): /\1_$mode: /" | tee -a "$TMP/latency.txt" ||
            { [ $SMOKE = 1 ] || exit 1; }
    done
else
    echo "latency benchmark skipped: $why" | tee "$TMP/latency.txt"
fi

# --- results --------------------------------------------------------------------------------
{
    cat "$TMP/head.txt"
    echo
    echo "## pipeline"; cat "$TMP/pipeline.txt"
    echo
    echo "## instructions per packet"; cat "$TMP/instr.txt"
    echo
    echo "## micro"; grep -E '^[a-z_]+/|time:' "$TMP/micro.txt" || true
    echo
    echo "## link"; cat "$TMP/link.txt"
    echo
    echo "## latency"; cat "$TMP/latency.txt"
    echo
    echo "## keys"
    grep -hE '^[a-z0-9_]+: ' "$TMP/pipeline.txt" | sed 's/^/pipeline_/' || true
    grep -hE '^instr_[a-z0-9_]+: ' "$TMP/instr.txt" || true
    cat "$TMP/micro-keys.txt"
    grep -hE '^[a-z0-9_]+: ' "$TMP/link.txt" | sed -E 's/^(link|flows|frame_bytes|rounds|run_seconds):/link_\1:/' || true
    grep -hE '^latency_[a-z0-9_]+: ' "$TMP/latency.txt" || true
} > "$RESULTS"
section results
echo "written: $RESULTS"
grep -E 'vs_testpmd|vs_ovs|pipeline_(route|nat|lb)_.*_(ns_per_pkt|bytes_per_flow)|nat_new_conn|lb_new_flows|pipeline_w2_|latency_(max_mpps|[0-9]+pct_p99)|^instr_.*_per_pkt' "$RESULTS" || true

# Issue 11's table: every row with its goal and the partners of its ratio, all from this
# run; its `goal_*` lines join the keys.
section "issue 11 goals (this run; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
bash "$HERE/goals.sh" "$RESULTS" > "$TMP/goals.txt"
sed '/^goal_/d' "$TMP/goals.txt"
grep '^goal_' "$TMP/goals.txt" >> "$RESULTS"

if [ $SMOKE = 0 ] || [ "${PLOT:-0}" = 1 ]; then
    if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
        /usr/bin/python3 "$HERE/plot.py" "$RESULTS" "$ROOT/docs/bench-mpps.png"
    else
        echo "plot skipped: python3-matplotlib not installed (apt-get install python3-matplotlib)"
    fi
fi

if [ $INSTR_RC != 0 ]; then
    echo "bench: FAILED: instructions per packet over budget (bench/instr-budget.txt), see the instructions section" >&2
    exit 1
fi
