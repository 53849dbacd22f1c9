#!/usr/bin/env bash
# bench/instr.sh — instructions per packet of the pipeline benchmark's cases, counted by
# callgrind, against the committed budget in bench/instr-budget.txt.
#
#   bench/instr.sh [--budget FILE] [--packets N] [--only NAME[,NAME..]] [--update]
#
# Deterministic and independent of machine load: the pipeline benchmark's `--instr N`
# mode runs exactly N packets per case on a fake clock with fixed flow seeds, and
# callgrind counts only `measured_burst` and `measured_handoff` (`--toggle-collect`, the
# only functions named `measured_*`), so EAL start, table
# creation, flow establishment, warm-up and frame refill are not counted. Repeated runs
# agree to within 0.01 % (the NAT's hash seeds come from the clock; the route case is
# exact). ~2 s per case.
#
# Prints `instr_<name>_per_pkt: X` lines. Exit 1 when a case exceeds its budget plus
# tolerance (or fails to run), 0 otherwise. --update rewrites the budget column with
# the measured values (tolerances and comments kept).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"
BUDGET=$HERE/instr-budget.txt
PACKETS=16384
ONLY=""
UPDATE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --budget) BUDGET=$2; shift 2 ;;
        --packets) PACKETS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --update) UPDATE=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "instr.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

command -v valgrind >/dev/null ||
    { echo "instr.sh: valgrind not installed (scripts/setup.sh installs it)" >&2; exit 1; }
CARGO=${CARGO:-cargo}
# The bench binary cargo built (`Executable bench/pipeline.rs (target/.../pipeline-HASH)`).
BIN=$($CARGO bench --bench pipeline --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
[ -x "$BIN" ] || { echo "instr.sh: pipeline bench binary not found" >&2; exit 1; }

TMP=$(mktemp -d /tmp/flowgate-instr.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

fail=0
printf '%-12s %-9s %-6s %12s %10s %8s  %s\n' case mode flows instr/pkt budget change verdict
while read -r name mode flows budget tol; do
    case "$name" in ''|'#'*) continue ;; esac
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
    args=(--instr "$PACKETS" --mode "$mode")
    [ "$flows" != - ] && args+=(--flows "$flows")
    out=$TMP/$name.callgrind
    if ! valgrind --tool=callgrind --toggle-collect='*measured_*' \
        --callgrind-out-file="$out" "$BIN" "${args[@]}" > "$TMP/$name.log" 2>&1; then
        echo "instr.sh: $name: the benchmark failed under valgrind:" >&2
        tail -n 20 "$TMP/$name.log" >&2
        fail=1
        continue
    fi
    total=$(awk '/^totals:/ {print $2}' "$out")
    measured=$(awk -F': ' '/^instr_packets:/ {print $2}' "$TMP/$name.log")
    # A case that dropped packets measures a different path: refuse it.
    if grep -qE 'dropped [1-9]' "$TMP/$name.log"; then
        echo "instr.sh: $name: packets were dropped:" >&2
        grep -E 'pkts|drops' "$TMP/$name.log" >&2
        fail=1
        continue
    fi
    if [ -z "$total" ] || [ -z "$measured" ] || [ "$total" = 0 ]; then
        echo "instr.sh: $name: no instruction count (callgrind toggle function not found?)" >&2
        fail=1
        continue
    fi
    per=$(awk -v t="$total" -v n="$measured" 'BEGIN {printf "%.0f", t / n}')
    t=${tol%\%}
    verdict=$(awk -v p="$per" -v b="$budget" -v t="$t" 'BEGIN {
        if (p > b * (1 + t / 100)) print "OVER BUDGET"
        else if (p < b * (1 - t / 100)) print "ok (cheaper: lower the budget, --update)"
        else print "ok" }')
    change=$(awk -v p="$per" -v b="$budget" 'BEGIN {printf "%+.1f%%", (p - b) * 100 / b}')
    printf '%-12s %-9s %-6s %12s %10s %8s  %s\n' "$name" "$mode" "$flows" "$per" "$budget" "$change" "$verdict"
    echo "$name $per" >> "$TMP/measured"
    [ "$verdict" = "OVER BUDGET" ] && fail=1
done < "$BUDGET"

echo
[ -f "$TMP/measured" ] && awk '{printf "instr_%s_per_pkt: %s\n", $1, $2}' "$TMP/measured"
echo "instr_packets_per_case: $PACKETS"

if [ $UPDATE = 1 ] && [ -f "$TMP/measured" ]; then
    # Rewrite only the budget column of the measured rows, keeping the layout.
    awk 'NR == FNR { m[$1] = $2; next }
         /^[^#]/ && NF >= 5 && ($1 in m) { printf "%-12s %-9s %-7s %-14s %s\n", $1, $2, $3, m[$1], $5; next }
         { print }' "$TMP/measured" "$BUDGET" > "$TMP/budget.new"
    cp "$TMP/budget.new" "$BUDGET"
    echo "instr.sh: budget updated: $BUDGET"
    exit 0
fi
if [ $fail = 1 ]; then
    echo "instr.sh: FAILED: instructions per packet over budget (or a case did not run); see above" >&2
    exit 1
fi
