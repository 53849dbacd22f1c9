#!/usr/bin/env bash
# bench/goals.sh RESULTS — issue 11's table ("where each goal stands") from the `key: value`
# lines of one bench/run.sh run (bench/results/latest.txt): every row with its goal, and
# the link ratios with the partners they were measured against in the same run.
#
# Prints the table, then one `goal_<row>: <value> <unit> (goal <op> <target>: met|missed)`
# line per row (`n/a (reason)` when the run could not measure it), which bench/run.sh
# appends to the results file's keys.
set -euo pipefail
RESULTS=${1:-bench/results/latest.txt}

# row name | key | unit | op | goal | partners (keys shown beside the value) | label
ROWS='route_1m|pipeline_route_1m_ns_per_pkt|ns|<=|30||pipeline, route, 1M destinations
nat_10k|pipeline_nat_10k_ns_per_pkt|ns|<=|50||pipeline, NAT, 10k established flows
nat_1m|pipeline_nat_1m_ns_per_pkt|ns|<=|80|pipeline_nat_1m_mpps|pipeline, NAT, 1M established flows
nat_10m|pipeline_nat_10m_ns_per_pkt|ns|<=|150||pipeline, NAT, 10M established flows
nat_new_conn|pipeline_nat_new_conn_per_s|conn/s|>=|3000000||new NAT connections / s / core
bytes_per_flow_1m|pipeline_nat_1m_table_bytes_per_flow|B|<=|64|pipeline_nat_1m_table_bytes_per_slot pipeline_nat_1m_bytes_per_flow|memory per flow at 1M (flow table; per slot; whole NAT heap)
link_nat_1q|nat_vs_testpmd_macswap|x|>=|0.95|nat_mpps_median macswap_mpps_median|link, 1 queue pair, NAT vs testpmd macswap (Mpps: NAT, macswap)
link_nat_2q_ovs|nat_2q_vs_ovs_dpdk_nat|x|>=|3|nat_2q_mpps_median ovs_mpps_median|link, 2 queue pairs, NAT vs OVS-DPDK conntrack NAT (Mpps: NAT, OVS)
link_route_2q|route_2q_vs_testpmd_macswap_2q|x|>=|0.95|route_2q_mpps_median macswap_2q_mpps_median|link, 2 queue pairs, route vs testpmd macswap (Mpps: route, macswap)
workers2_nat_10k|pipeline_w2_nat_10k_scaling|x|>=|1.8|pipeline_w2_nat_10k_mpps pipeline_w2_nat_10k_1w_mpps|2 workers on 2 cores, NAT 10k: total / 1 worker (Mpps: 2 workers, 1 worker)
workers2_nat_10k_cpu|pipeline_w2_nat_10k_cpu_scaling|x|>=|1.8|pipeline_w2_nat_10k_cpu_ns_per_pkt pipeline_w2_nat_10k_1w_cpu_ns_per_pkt|2 workers, NAT 10k, by thread cpu time (cpu ns/pkt: 2 workers, 1 worker)'

awk -v rows="$ROWS" '
    BEGIN { keys = 0 }
    $0 == "## keys" { keys = 1; next }
    keys && match($0, /^[a-z0-9_]+: /) { v[substr($0, 1, RLENGTH - 2)] = substr($0, RLENGTH + 1) }
    function isnum(x) { return x ~ /^-?[0-9.]+$/ }
    END {
        n = split(rows, R, "\n")
        printf "%-78s %16s %10s  %s\n", "case", "now", "goal", "partners (same run)"
        for (i = 1; i <= n; i++) {
            split(R[i], f, "|")
            name = f[1]; k = f[2]; unit = f[3]; op = f[4]; goal = f[5]; label = f[7]
            val = (k in v) ? v[k] : "n/a (not measured in this run)"
            split(val, w, " ")
            partners = ""
            np = split(f[6], P, " ")
            for (j = 1; j <= np; j++) {
                pv = (P[j] in v) ? v[P[j]] : "n/a"; split(pv, pw, " ")
                partners = partners (j > 1 ? ", " : "") pw[1]
            }
            if (isnum(w[1])) {
                x = w[1] + 0
                met = (op == "<=") ? (x <= goal + 0) : (x >= goal + 0)
                verdict = met ? "met" : "missed"
                shown = w[1] " " unit
            } else {
                verdict = ""; shown = "n/a"
            }
            printf "%-78s %16s %10s  %s%s\n", label, shown, op " " goal, partners, (verdict != "" ? "  [" verdict "]" : "")
            if (verdict != "")
                out[i] = sprintf("goal_%s: %s %s (goal %s %s: %s)", name, w[1], unit, op, goal, verdict)
            else
                out[i] = sprintf("goal_%s: %s", name, val)
        }
        print ""
        for (i = 1; i <= n; i++) print out[i]
    }' "$RESULTS"
