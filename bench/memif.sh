#!/usr/bin/env bash
# bench/memif.sh — link benchmark: flowgate against dpdk-testpmd on the same net_memif link.
#
#   generator                               device under test (DUT)
#   dpdk-testpmd --forward-mode=flowgen     (a) dpdk-testpmd --forward-mode=macswap
#   net_memif server  ====== memif ======   (b) flowgate, routing one-armed
#   fwd lcore on cpu 0                      (c) flowgate, NAT one-armed (flows established)
#                                           (d) flowgate, load balancer one-armed, DNAT
#                                               (client IP kept), one established flow
#                                           net_memif client; fwd lcore / worker on cpu 1
#
# The DUT is the memif *client*: DPDK 22.11's memif server segfaults at times when its
# client disconnects while forwarding. So the generator (server) starts first and the DUT
# connects; at the end the generator stops forwarding, flowgate is scraped and stopped
# (SIGTERM: it prints its summary, which every run requires), then the generator quits
# (the client, too, can crash when its server leaves under it; see run_flowgate).
#
# Every run also prints the share of its cpu each forwarding thread got during the
# measurement window, and the busiest other process: a run where a forwarding thread got
# less than CONTENDED_PCT (90) % is counted in `contended_runs` (see cpu_report).
#
# Both processes get one forwarding core each; their main (control) lcores share the other
# cpu with the peer's forwarding core (`--lcores 0@1,1@0` for the generator), as a 2-core
# machine has nothing else to give. In one invocation the DUTs alternate (a, b, c, a, b, c,
# ...) for --rounds rounds; each run lasts --duration seconds. The rate is what the
# generator receives back (testpmd's `Rx-pps` from `show port stats` once a second, median
# of the per-second samples after two warm-up seconds); flowgate's own forwarded counter (/metrics) is reported beside it.
#
# testpmd 22.11's flowgen ignores --eth-peer and --tx-ip: it always sends
#   00:01:02:03:04:00 > 00:01:02:03:04:01, 10.254.0.0:1000 > 10.253.0.N:1001 (UDP),
# N = 0 .. --flows - 1. So the DUT's memif port gets MAC 00:01:02:03:04:01, flowgate's port
# address is 10.254.0.1/16 and it routes 10.253.0.0/16 back out the same port via
# 10.254.0.2 (the generator). flowgate learns that neighbor from ARP (there is no static
# neighbor in the config, and flowgen answers no ARP). A memif client does not reconnect
# once its server has gone, so the same generator process sends it: testpmd runs
# interactively (commands on a fifo) with a second port, net_pcap holding one ARP request
# from 10.254.0.2 / 00:01:02:03:04:00 for 10.254.0.1; `io` forwarding delivers it (flowgate
# answers and learns the MAC; neighbor.timeout_s is a day, so it never goes stale), then
# `set portlist 0`, `set fwd flowgen`, `start`, and `show port stats 0` once a second.
#
# Load balancer mode (lb): flowgen's destination 10.253.0.0 is a VIP with a UDP listener
# on 1001 whose group holds four targets 10.253.1.1-4:1001; every packet is rewritten
# (DNAT, client address kept) and routed back to the generator, whose receive rate is the
# measurement as for the other modes. The first packet pins the flow to a target, every
# later one hits the established flow. Only ONE flow: flowgen has a single source endpoint
# (10.254.0.0:1000), so two of its flows pinned to the same target would be the same
# (client endpoint, target) pair, which the LB refuses (`lb_tuple_conflict`: replies would
# be ambiguous, as AWS documents) — with 1024 VIPs most packets would be refused, and the
# VIP lookup is a short linear list anyway (a handful of VIPs per load balancer is the
# design point). The generator (and so the macswap baseline) does the same work for one
# flow as for 1024.
#
# Two queue pairs (modes macswap-2q, route-2q, nat-2q, ovs): the generator and the DUT
# both open 2 rx/tx queue pairs on the memif link (flowgate: `queues: 2`, still one worker
# polling both; testpmd: --rxq=2 --txq=2, one forwarding core). This is for the OVS-DPDK
# peer: OVS 3.1 transmits from its PMD thread on tx queue 1 (queue 0 belongs to its main
# thread), so a 1-queue-pair memif link would carry nothing back.
#
# OVS-DPDK (mode ovs, bench/ovs.sh): Debian's ovs-vswitchd-dpdk (package
# openvswitch-switch-dpdk, installed on first use when missing) with its own database and
# run directory under $WORK, its own --file-prefix and 512 MiB of hugepages, its PMD thread
# on cpu 1 and main lcore on cpu 0 like every other DUT, started in a network namespace of
# its own (the bridge's internal port is a tap). A netdev bridge with one memif client port
# (options:dpdk-devargs=net_memif0,role=client,..., n_rxq=2) and two OpenFlow rules:
#   table 0: ip, in_port=link  -> ct(commit, nat(src=198.18.0.1), table=1)
#   table 1: ip                -> set MACs toward the generator, dec_ttl, out the in_port
# i.e. flowgate's NAT case in conntrack form: every packet comes back source-translated
# to 198.18.0.1 (first packet of a flow commits the connection, the rest hit it). A run
# counts only when OVS reports the 1024 conntrack entries and transmitted packets; OVS is
# stopped (bridge deleted, `exit --cleanup`, namespace and files removed) after each run.
#
# Ends with `key: value` lines: *_mpps_median/min/max, route_vs_testpmd_macswap,
# nat_vs_testpmd_macswap, lb_vs_testpmd_macswap, route_2q_vs_testpmd_macswap_2q,
# nat_2q_vs_testpmd_macswap_2q, nat_2q_vs_ovs_dpdk_nat (ratios of medians of the same
# invocation; `n/a (reason)` when not measurable).
#
# Usage: bench/memif.sh [--rounds N] [--duration S] [--flows N] [--pkt-size B]
#                       [--mode macswap|route|nat|lb|macswap-2q|route-2q|nat-2q|ovs]...
#                       [--flowgate PATH] [--smoke] [--autogroup-nice N]
#
# --autogroup-nice N (e.g. -15): on a shared machine, run in a session of our own whose
# scheduler autogroup has nice N, so that other sessions' jobs (compilers, tests) take
# less of the two cpus the link needs. With sched_autogroup (Debian's default) a plain
# `nice` only ranks processes inside one session. Measured 2026-11-28 at load 5-7: the
# forwarding threads got 20-37 % of their cpus without it, 85-96 % with -15. It slows
# the other jobs for the benchmark's duration.
# Needs: root, hugepages (>= 1 GiB free), dpdk-testpmd (Debian dpdk), flowgate built
# (cargo build --release). Every process it starts is stopped on exit.
set -euo pipefail

ROUNDS=3
DURATION=5
FLOWS=1024
PKT=64
MODES=()
FLOWGATE=""
TESTPMD=${TESTPMD:-dpdk-testpmd}
# Per invocation, so two benchmark runs on one machine never scrape each other's flowgate.
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:$((20000 + $$ % 20000))}
SMOKE=0
AG_NICE=""
ARGS=("$@")

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --flows) FLOWS=$2; shift 2 ;;
        --pkt-size) PKT=$2; shift 2 ;;
        --mode) MODES+=("$2"); shift 2 ;;
        --modes) IFS=', ' read -r -a MODES <<<"$2"; shift 2 ;;
        --flowgate) FLOWGATE=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --autogroup-nice) AG_NICE=$2; shift 2 ;;
        -h|--help) sed -n '2,88p' "$0"; exit 0 ;;
        *) echo "memif.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "$SMOKE" = 1 ]; then
    ROUNDS=1; DURATION=2
fi
if [ -n "${AG_NICE:-}" ]; then
    if [ -z "${MEMIF_OWN_SESSION:-}" ]; then
        # A new session gets a new autogroup; the caller's session keeps its priority.
        exec env MEMIF_OWN_SESSION=1 setsid -w bash "$0" "${ARGS[@]}"
    fi
    echo "$AG_NICE" > /proc/self/autogroup || echo "memif.sh: cannot set autogroup nice" >&2
fi
# Smoke (CI): the 1-queue-pair modes only (OVS-DPDK takes seconds to start and is not
# installed in CI).
if [ ${#MODES[@]} -eq 0 ]; then
    if [ "$SMOKE" = 1 ]; then MODES=(macswap route nat lb)
    else MODES=(macswap route nat lb macswap-2q route-2q nat-2q ovs); fi
fi
ALL_MODES=(macswap route nat lb macswap-2q route-2q nat-2q ovs)
# Queue pairs on the link in the current run (1, or 2 for the -2q modes and ovs).
Q=1
queues_of() { case "$1" in *-2q|ovs) echo 2 ;; *) echo 1 ;; esac; }
# flowgen destinations in lb mode (each one a VIP, see above).
LB_VIPS=1

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
if [ -z "$FLOWGATE" ]; then
    for c in "${CARGO_TARGET_DIR:-$ROOT/target}/release/flowgate" "$ROOT/target/release/flowgate"; do
        if [ -x "$c" ]; then FLOWGATE=$c; break; fi
    done
fi

WORK=$(mktemp -d /tmp/flowgate-memif.XXXXXX)
SOCK=$WORK/memif.sock
PIDS=()

cleanup() {
    local p
    ovs_stop 2>/dev/null || true
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        if alive "$p"; then kill -INT "$p" 2>/dev/null || true; fi
    done
    sleep 0.5
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    if [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "memif.sh: $*" >&2; exit 1; }

# shellcheck source=bench/ovs.sh
. "$HERE/ovs.sh"

command -v "$TESTPMD" >/dev/null || die "$TESTPMD not found (apt-get install dpdk)"
[ "$(id -u)" = 0 ] || die "needs root (hugepages, DPDK)"
free_hp=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
hp_kb=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)
if [ $((free_hp * hp_kb)) -lt $((1024 * 1024)) ]; then
    want=$(( $(awk '/HugePages_Total/ {print $2}' /proc/meminfo) + 1024 * 1024 / hp_kb ))
    echo "$want" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
    free_hp=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
    [ $((free_hp * hp_kb)) -ge $((1024 * 1024)) ] || die "needs >= 1 GiB of free hugepages"
fi

# --- helpers ------------------------------------------------------------------------

median() { tr ' ' '\n' | awk 'NF' | sort -n | awk '{a[NR]=$1} END { if (NR == 0) print ""; else if (NR % 2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2] + a[NR/2+1]) / 2 }'; }
minmax() { tr ' ' '\n' | awk 'NF' | sort -n | awk 'NR == 1 {mn=$1} {mx=$1} END { if (NR) print mn, mx }'; }

# testpmd EAL arguments shared by every instance: no PCI scan, private in-memory runtime.
eal_common() { echo "--no-pci --in-memory -m 512 --log-level=lib.eal:warning"; }

# Is process $1 running (not gone, not a zombie)?
alive() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

wait_gone() { # pid timeout_s
    local i
    for i in $(seq 1 $(( $2 * 10 ))); do
        alive "$1" || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}

stop_pid() { # pid signal [timeout_s]
    kill -"$2" "$1" 2>/dev/null || true
    # flowgate joins its workers and prints its summary on SIGTERM: on a loaded machine
    # that can take seconds, and a KILL would lose the summary.
    wait_gone "$1" "${3:-20}"
}

# Start "$@" in the background with output to $SPAWN_LOG, detached from this shell's job
# table (testpmd's memif server may crash when its peer disconnects; that is not news).
# Prints the pid.
spawn() {
    local pidf; pidf=$(mktemp "$WORK/pid.XXXXXX")
    ( "$@" > "$SPAWN_LOG" 2>&1 < "${SPAWN_IN:-/dev/null}" & echo $! > "$pidf" )
    cat "$pidf"
}

# Save /metrics to file $1 (3 tries, 5 s each: the control thread shares cpu 0 with the
# generator's busy-polling lcore, so a scrape can be slow). Empty file if unreachable.
scrape() {
    local i
    for i in 1 2 3; do
        curl -s --max-time 5 "http://$METRICS_ADDR/metrics" > "$1" 2>/dev/null && [ -s "$1" ] && return 0
    done
    : > "$1"
}

# Sum of metric $1's samples in scrape file $2 ("?" if the scrape failed, 0 if absent).
metric() {
    [ -s "$2" ] || { echo "?"; return; }
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%.0f\n", s + 0 }' "$2"
}

# flowgate config for one-armed routing (and NAT when $1 = nat, a load balancer when lb).
write_config() {
    local mode=${1%-2q} f=$WORK/flowgate-$1.yaml
    cat > "$f" <<EOF
# generated by bench/memif.sh: flowgate one-armed on a net_memif client port
eal:
  args: [--file-prefix, fgb-dut, --no-pci, --in-memory, --log-level=lib.eal:warning]
lcores:
  main: 0
  workers: [1]
mempool:
  mbufs: 16383
  cache: 256
  data_room: 2176
ports:
  - name: link
    device: net_memif0,role=client,socket=$SOCK,id=0,mac=00:01:02:03:04:01
    addresses: [10.254.0.1/16]
    mtu: 1500
    queues: $(queues_of "$1")
    role: data
routes:
  - prefix: 10.253.0.0/16
    port: link
    via: 10.254.0.2
metrics:
  listen: $METRICS_ADDR
worker:
  burst: 32
  tx_drain_us: 100
  idle_sleep_us: 0
neighbor:
  timeout_s: 86400
  pending_max: 64
log_level: info
EOF
    if [ "$mode" = nat ]; then
        cat >> "$f" <<EOF
# Every flowgen packet (10.254.0.0:1000 > 10.253.0.N:1001) leaves with the public source
# 198.18.0.1; the first packet of each of the --flows destinations creates its mapping,
# every later one hits an established flow.
nat_gateways:
  - id: bench
    inside_prefixes: [10.254.0.0/16]
    public_ips: [198.18.0.1]
    flows_per_core: $(( FLOWS * 2 > 1024 ? FLOWS * 2 : 1024 ))
EOF
    fi
    if [ "$mode" = lb ]; then
        local vips
        vips=$(seq 0 $((LB_VIPS - 1)) | sed 's/^/10.253.0./' | paste -sd, - | sed 's/,/, /g')
        cat >> "$f" <<EOF
# flowgen's destination(s) are VIPs; the flow is pinned to one of four targets (DNAT)
# reached back through the generator (route 10.253.0.0/16 above).
load_balancers:
  - id: bench
    vips: [$vips]
    flows_per_core: 1024
    listeners:
      - {protocol: udp, port: 1001, target_group: tg}
    target_groups:
      - name: tg
        udp_idle_timeout_s: 3600
        targets:
          - {ip: 10.253.1.1, port: 1001}
          - {ip: 10.253.1.2, port: 1001}
          - {ip: 10.253.1.3, port: 1001}
          - {ip: 10.253.1.4, port: 1001}
EOF
    fi
    echo "$f"
}

# One ARP request 10.254.0.2 (00:01:02:03:04:00) -> who-has 10.254.0.1, as a pcap file.
write_arp_pcap() {
    python3 - "$WORK/arp.pcap" <<'EOF'
import struct, sys
eth = bytes.fromhex("ffffffffffff" "000102030400" "0806")
arp = bytes.fromhex("0001" "0800" "06" "04" "0001" "000102030400" "0afe0002"
                    "000000000000" "0afe0001")
frame = (eth + arp).ljust(60, b"\0")
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i in range(3):
        f.write(struct.pack("<IIII", 0, i, len(frame), len(frame)) + frame)
EOF
}

GEN_PID=""
# Start the generator: testpmd, memif server (port 0) plus the ARP pcap (port 1), reading
# commands from a fifo held open on fd 8. Forwards nothing until told.
gen_start() { # log
    local fifo=$WORK/gen.in
    rm -f "$fifo" "$SOCK"
    mkfifo "$fifo"
    # The pcap port needs as many queues as the memif one (testpmd configures all ports
    # alike): one rx_pcap / tx_pcap per queue.
    local pcap="rx_pcap=$WORK/arp.pcap,tx_pcap=$WORK/gen-arp-rx.pcap"
    [ "$Q" = 2 ] && pcap="$pcap,rx_pcap=$WORK/arp.pcap,tx_pcap=$WORK/gen-arp-rx2.pcap"
    GEN_PID=$(SPAWN_LOG=$1 SPAWN_IN=$fifo spawn "$TESTPMD" --lcores 0@1,1@0 $(eal_common) \
        --file-prefix fgb-gen \
        --vdev "net_memif0,role=server,socket=$SOCK,id=0,mac=00:01:02:03:04:00${GEN_MEMIF_OPT:-}" \
        --vdev "net_pcap0,$pcap" \
        -- -i --forward-mode=io --nb-cores=1 --burst=32 --total-num-mbufs=16384 \
        --rxq="$Q" --txq="$Q" \
        --flowgen-flows="${GEN_FLOWS:-$FLOWS}" --txpkts="$PKT" --no-flush-rx)
    exec 8> "$fifo"
    PIDS+=("$GEN_PID")
    # The memif socket is listening once testpmd shows its prompt.
    local i
    for i in $(seq 1 100); do
        grep -aq 'testpmd>' "$1" 2>/dev/null && return 0
        alive "$GEN_PID" || break
        sleep 0.1
    done
    echo "    generator did not start: $(tail -n 3 "$1" | tr '\n' ' ')"
    return 1
}

gen_cmd() { echo "$*" >&8; }

# Deliver the ARP request (io forwarding pcap -> memif for a second).
gen_arp() {
    gen_cmd start
    sleep 1
    gen_cmd stop
    sleep 0.3
}

# --- contention: how much of its cpu each busy-polling thread got ----------------------
# Generator and DUT busy-poll one cpu each on a 2-cpu machine, so anything else runnable
# on either cpu (another job, a leftover poller, a second DUT thread) halves that side's
# rate: the bimodal 4 vs 10 Mpps runs of issue 11. Over the measurement window every run
# reads each forwarding thread's schedstat (time on cpu, time runnable but waiting) and
# the busiest other process, prints them, and counts the runs where a forwarding thread
# got less than CONTENDED_PCT % of its cpu as contended (their rates measure the
# neighbour, not the link).
CONTENDED_PCT=${CONTENDED_PCT:-90}
CPU_PIDS=""     # "name:pid ..." whose forwarding threads cpu_mark reads
CPU_NOTE=""     # set by cpu_report: "gen 99%, dut 98%; busiest other: ..."
CPU_MIN=100     # set by cpu_report: the smallest share of the run
CONTENDED=0; CONTENDED_RUNS=""

# Cache-line round trip cpu 0 <-> cpu 1 (bench/c2c.c, built here when a C compiler is
# there), measured just before each run while neither end polls. memif moves every packet
# as cache lines between the two cpus, so with the same cpu shares the rate still follows
# this latency (2026-11-28: the same invocation gave 13.4 Mpps macswap then 4.4 Mpps
# macswap-2q, both ends at 87-96 % of their cpus). "?" if unavailable.
C2C_BIN=""
if command -v cc >/dev/null && cc -O2 -pthread -o "$WORK/c2c" "$HERE/c2c.c" 2>/dev/null; then
    C2C_BIN=$WORK/c2c
fi
C2C_NS="?"
c2c_once() { if [ -n "$C2C_BIN" ]; then timeout 10 "$C2C_BIN" 0 1 2>/dev/null || echo "?"; else echo "?"; fi; }
c2c_measure() { C2C_NS=$(c2c_once); }
# Placement of the run from its round trips: near (all < C2C_NEAR_NS; measured: ~50 ns),
# far (all >= it; measured: 330-420 ns), mixed (it moved during the run), or unknown.
# Round trips of 1 us or more are not placement but a descheduled peer (a busy machine
# without --autogroup-nice): ignored.
C2C_NEAR_NS=${C2C_NEAR_NS:-150}
PLACEMENT=unknown; declare -A PLACED
placement_of() { # "before/after" round trips
    echo "$1" | tr '/' '\n' | awk -v t="$C2C_NEAR_NS" '
        $1 ~ /^[0-9]+$/ && $1 + 0 < 1000 { n++; if ($1 + 0 < t) near++ }
        END { if (!n) print "unknown"; else if (near == n) print "near"; else if (!near) print "far"; else print "mixed" }'
}
C2C_ALL=""

# cpu_mark FILE: "T wall_ns", "F name tid run_ns wait_ns" per forwarding thread (DPDK
# lcore threads rte-worker-*, OVS pmd*), "P pid ticks comm" per process.
cpu_mark() {
    {
        echo "T $(date +%s%N)"
        local e name pid t
        for e in $CPU_PIDS; do
            name=${e%%:*}; pid=${e#*:}
            for t in /proc/"$pid"/task/*; do
                case "$(cat "$t/comm" 2>/dev/null)" in
                    rte-worker-*|pmd*) echo "F $name ${t##*/} $(awk '{print $1, $2}' "$t/schedstat" 2>/dev/null)" ;;
                esac
            done
        done
        # utime + stime (fields 14, 15; counted after the parenthesised comm).
        awk '{ i = index($0, ") "); n = split(substr($0, i + 2), f, " ");
               c = substr($0, index($0, "(") + 1, i - index($0, "(") - 1); gsub(/ /, "_", c);
               if (n >= 13) print "P", $1, f[12] + f[13], c }' /proc/[0-9]*/stat 2>/dev/null
    } > "$1"
}

# cpu_report: compare cpu0.txt and cpu1.txt; sets CPU_NOTE and CPU_MIN.
cpu_report() {
    # And the round trip again once both ends are gone (not for OVS, still polling):
    # "before/after".
    case "$1" in ovs*) ;; *) C2C_NS="$C2C_NS/$(c2c_once)" ;; esac
    C2C_ALL="$C2C_ALL $C2C_NS"
    PLACEMENT=$(placement_of "$C2C_NS")
    PLACED[$PLACEMENT]=$(( ${PLACED[$PLACEMENT]:-0} + 1 ))
    local own=" $$ "
    local e; for e in $CPU_PIDS; do own="$own${e#*:} "; done
    read -r CPU_MIN CPU_NOTE < <(awk -v own="$own" -v hz="$(getconf CLK_TCK)" -v c2c="$C2C_NS" -v pl="$PLACEMENT" '
        FNR == 1 { f++ }
        $1 == "T" { t[f] = $2 }
        $1 == "F" { k = $2 " " $3; run[f, k] = $4; wait[f, k] = $5; if (f == 1) keys[k] = $2 }
        $1 == "P" { tick[f, $2] = $3; comm[$2] = $4 }
        END {
            wall = t[2] - t[1]; if (wall <= 0) { print 100, "cpu: n/a"; exit }
            mn = 100; s = ""
            for (k in keys) {
                if (!((2, k) in run)) continue
                r = 100 * (run[2, k] - run[1, k]) / wall; w = 100 * (wait[2, k] - wait[1, k]) / wall
                s = s sprintf("%s%s fwd %.0f%% (waited %.0f%%)", s == "" ? "" : ", ", keys[k], r, w)
                if (r < mn) mn = r
            }
            best = ""; bt = 0; all = 0
            for (x in comm) {
                if (index(own, " " x " ") || !((1, x) in tick) || !((2, x) in tick)) continue
                d = tick[2, x] - tick[1, x]; all += d; if (d > bt) { bt = d; best = comm[x] }
            }
            sec = hz * wall / 1e9
            o = bt > 0 ? sprintf("%s %.0f%% (all others %.0f%%)", best, 100 * bt / sec, 100 * all / sec) : "none"
            printf "%.0f cpu: %s; busiest other process: %s; c2c round trip %s ns (%s)\n", mn, (s == "" ? "n/a" : s), o, c2c, pl
        }' "$WORK/cpu0.txt" "$WORK/cpu1.txt")
    if [ "${CPU_MIN%.*}" -lt "$CONTENDED_PCT" ]; then
        CONTENDED=$((CONTENDED + 1))
        CONTENDED_RUNS="$CONTENDED_RUNS $1"
        CPU_NOTE="$CPU_NOTE  CONTENDED (< $CONTENDED_PCT %)"
    fi
}

GEN_RX=0; GEN_TX=0
# Generate for $DURATION s (flowgen on the memif port only); sets GEN_RX / GEN_TX (pps,
# median of the per-second samples after two warm-up seconds), then the generator quits:
# it leaves first, so the DUT (memif client) sees its server go, which it survives.
gen_run() { # log
    gen_cmd "set portlist 0"
    gen_cmd "set fwd flowgen"
    gen_cmd start
    local i
    for i in $(seq 1 $((DURATION + 2))); do
        sleep 1
        # The samples kept are those of seconds 3 .. DURATION + 2: the cpu each side got
        # is measured over the same window.
        [ "$i" = 2 ] && cpu_mark "$WORK/cpu0.txt"
        gen_cmd "show port stats 0"
    done
    cpu_mark "$WORK/cpu1.txt"
    gen_cmd stop
    # The DUT, when flowgate (memif client), is stopped first, see run_flowgate.
    if [ -n "${GEN_BEFORE_QUIT:-}" ]; then sleep 0.5; $GEN_BEFORE_QUIT; fi
    gen_cmd quit
    exec 8>&-
    wait_gone "$GEN_PID" 10
    GEN_RX=$(grep -a 'Rx-pps:' "$1" | awk '{print $2}' | tail -n +3 | head -n "$DURATION" |
        median)
    GEN_TX=$(grep -a 'Tx-pps:' "$1" | awk '{print $2}' | tail -n +3 | head -n "$DURATION" |
        median)
    GEN_RX=${GEN_RX:-0}; GEN_TX=${GEN_TX:-0}
}

declare -A SAMPLES NOTE
# flowgate runs, and those that ended with its clean exit summary (all, as the memif client).
FG_RUNS=0; FG_CLEAN=0
declare -A SAMPLES_P   # "mode/placement" -> samples
record() {
    SAMPLES[$1]="${SAMPLES[$1]:-} $2"
    SAMPLES_P[$1/$PLACEMENT]="${SAMPLES_P[$1/$PLACEMENT]:-} $2"
}

run_macswap() {
    local mode=$1 r=$2 log=$WORK/dut-$1-$2.log glog=$WORK/gen-$1-$2.log
    c2c_measure
    gen_start "$glog" || return 1
    local dut
    dut=$(SPAWN_LOG=$log spawn "$TESTPMD" --lcores 0@0,1@1 $(eal_common) --file-prefix fgb-dut \
        --vdev "net_memif0,role=client,socket=$SOCK,id=0,mac=00:01:02:03:04:01" \
        -- --forward-mode=macswap --nb-cores=1 --burst=32 --total-num-mbufs=16384 \
        --rxq="$Q" --txq="$Q" --stats-period=1)
    PIDS+=("$dut")
    sleep 1.5
    CPU_PIDS="gen:$GEN_PID dut:$dut"
    gen_run "$glog"
    stop_pid "$dut" INT
    cpu_report "$mode/$r"
    printf '  run %d/%d  %-10s flows %-7s %4sB  gen Rx-pps: %9s  Tx-pps: %9s  -> %6.3f Mpps\n' \
        "$r" "$ROUNDS" "$mode" "$FLOWS" "$PKT" "$GEN_RX" "$GEN_TX" "$(echo "$GEN_RX / 1000000" | bc -l)"
    echo "    $CPU_NOTE$(gen_queue_rx "$glog")"
    record "$mode" "$GEN_RX"
}

# Non-zero flowgate_packets_dropped_total{reason=...} of scrape file $1: "tx_full 593728, ...".
drop_reasons() {
    local r
    r=$(awk -F'"' '/^flowgate_packets_dropped_total\{/ { split($3, v, " "); if (v[2] + 0 > 0) printf "%s%s %s", (n++ ? ", " : ""), $2, v[2] }' "$1" 2>/dev/null)
    echo "${r:-none}"
}

# 2 queue pairs: packets the generator received per rx queue (testpmd's per-stream
# "Forward Stats" at its stop, last block), e.g. "; generator rx per queue: 1483264 0".
gen_queue_rx() {
    [ "$Q" = 2 ] || return 0
    local q0 q1
    q0=$(grep -a -A1 'Forward Stats for RX Port= 0/Queue= 0 -> TX Port= 0' "$1" | awk '/RX-packets/ {v=$2} END {print v}')
    q1=$(grep -a -A1 'Forward Stats for RX Port= 0/Queue= 1 -> TX Port= 0' "$1" | awk '/RX-packets/ {v=$2} END {print v}')
    echo "; generator rx per queue: ${q0:-?} ${q1:-?}"
}

# Scrape flowgate and stop it (SIGTERM: it prints its summary) before the generator quits.
fg_stop_early() {
    scrape "$WORK/m1.txt"
    stop_pid "$FG_PID" TERM
}

run_flowgate() {
    local mode=$1 r=$2 cfg log=$WORK/dut-$1-$2.log glog=$WORK/gen-$1-$2.log
    cfg=$(write_config "$mode")
    c2c_measure
    local gen_flows=$FLOWS base=${1%-2q}
    [ "$base" = lb ] && gen_flows=$LB_VIPS
    GEN_FLOWS=$gen_flows gen_start "$glog" || return 1
    local dut
    dut=$(SPAWN_LOG=$log spawn "$FLOWGATE" run -c "$cfg")
    PIDS+=("$dut")
    local i up=0
    for i in $(seq 1 100); do
        if curl -s --max-time 1 "http://$METRICS_ADDR/metrics" >/dev/null 2>&1 && alive "$dut"; then
            up=1; break
        fi
        alive "$dut" || break
        sleep 0.1
    done
    if [ "$up" != 1 ]; then
        stop_pid "$dut" TERM
        gen_cmd quit; exec 8>&-; stop_pid "$GEN_PID" INT
        NOTE[$mode]="flowgate did not start (log: $(tail -n 3 "$log" | tr '\n' ' '))"
        echo "  run $r/$ROUNDS  $mode: ${NOTE[$mode]}"
        return 1
    fi
    gen_arp
    scrape "$WORK/m0.txt"
    if ! alive "$dut" || [ ! -s "$WORK/m0.txt" ]; then
        # Should not happen since flowgate is the memif client; kept as a guard.
        stop_pid "$dut" KILL
        gen_cmd quit; exec 8>&-; stop_pid "$GEN_PID" INT
        echo "    flowgate died after the ARP exchange; restarting"
        if [ "${3:-0}" -lt 2 ]; then
            run_flowgate "$mode" "$r" $(( ${3:-0} + 1 ))
            return
        fi
        NOTE[$mode]="${NOTE[$mode]:-}${NOTE[$mode]:+; }run $r: flowgate kept dying after the ARP exchange"
        return 1
    fi
    local neigh; neigh=$(metric flowgate_neighbor_entries "$WORK/m0.txt")
    local f0; f0=$(metric flowgate_forwarded_packets_total "$WORK/m0.txt")
    local t0; t0=$(date +%s.%N)
    # DPDK 22.11's memif *client* can crash when its server leaves (segfault in
    # librte_net_memif's rx or tx while the ring is unmapped, flowgate gone without its
    # summary): seen with 2 queue pairs (once in six runs) and, on 2026-11-28, with 1
    # (the LB run of round 3; a route run at 05:20 UTC, dmesg: segfault in
    # eth_memif_tx). So flowgate is always scraped and stopped (SIGTERM, summary) while
    # the stopped generator is still connected, and the generator quits after it.
    FG_PID=$dut
    CPU_PIDS="gen:$GEN_PID dut:$dut"
    GEN_BEFORE_QUIT=fg_stop_early gen_run "$glog"
    cpu_report "$mode/$r"
    local t1; t1=$(date +%s.%N)
    local f1; f1=$(metric flowgate_forwarded_packets_total "$WORK/m1.txt")
    local drops; drops=$(metric flowgate_packets_dropped_total "$WORK/m1.txt")
    local natc=""
    if [ "$base" = nat ]; then
        natc=", nat active connections $(metric flowgate_nat_active_connections "$WORK/m1.txt")"
    elif [ "$base" = lb ]; then
        natc=", lb active flows $(metric flowgate_lb_active_flows "$WORK/m1.txt")"
    fi
    stop_pid "$dut" TERM
    local fwd_pps="?"
    if [ "$f0" != "?" ] && [ "$f1" != "?" ]; then
        fwd_pps=$(echo "($f1 - $f0) / ($t1 - $t0)" | bc -l | awk '{printf "%.0f", $1}')
    fi
    # flowgate's own summary at exit (SIGTERM) is the authoritative total.
    local total; total=$(awk '/Pipeline: forwarded/ {print $3; exit}' "$log")
    FG_RUNS=$((FG_RUNS + 1))
    if [ -n "$total" ]; then FG_CLEAN=$((FG_CLEAN + 1)); fi
    printf '  run %d/%d  %-10s flows %-7s %4sB  gen Rx-pps: %9s  Tx-pps: %9s  -> %6.3f Mpps  (flowgate: forwarded %s pps during the run, %s in all; neighbors %s, drops %s%s)\n' \
        "$r" "$ROUNDS" "$mode" "$gen_flows" "$PKT" "$GEN_RX" "$GEN_TX" \
        "$(echo "$GEN_RX / 1000000" | bc -l)" "$fwd_pps" "${total:-?}" "$neigh" "$drops" "$natc"
    echo "    $CPU_NOTE; drop reasons: $(drop_reasons "$WORK/m1.txt")$(gen_queue_rx "$glog")"
    local bad=""
    # No summary: flowgate died when the generator disconnected (see above); then the
    # scrape right after the run stands in for it.
    [ -n "$total" ] || { [ "$f1" != "?" ] && total=$f1; }
    if [ -z "$total" ]; then
        # Died when the generator connected (memif server, as above). The generator then
        # reads garbage rates from the dead peer's rings (seen: 3.6-4.2 Mpps): retry.
        if [ "${3:-0}" -lt 2 ]; then
            local keep="$ROOT/bench/results/memif-died-$mode-$r-$(date +%s)"
            mkdir -p "$keep" && cp "$log" "$glog" "$WORK"/m?.txt "$keep"/ 2>/dev/null || true
            echo "    flowgate ended without its summary (logs: $keep); retrying"
            run_flowgate "$mode" "$r" $(( ${3:-0} + 1 ))
            return
        fi
        bad="flowgate died during the run (no summary, no metrics)"
    elif [ "$GEN_RX" != 0 ] && [ "$total" = 0 ]; then
        # Traffic came back that flowgate did not forward: not a flowgate measurement.
        bad="generator received traffic but flowgate forwarded nothing"
    elif [ "$base" = nat ] && [ "${natc##*connections }" = 0 ]; then
        # The binary accepted nat_gateways but translated nothing: not a NAT measurement.
        bad="flowgate reported no NAT connections"
    elif [ "$base" = lb ] && [ "${natc##*flows }" = 0 ]; then
        bad="flowgate reported no load balancer flows"
    fi
    if [ -n "$bad" ]; then
        local keep="$ROOT/bench/results/memif-discarded-$mode-$r-$(date +%s)"
        mkdir -p "$keep" && cp "$WORK"/*.log "$WORK"/*.yaml "$WORK"/m?.txt "$keep"/ 2>/dev/null || true
        echo "    run discarded: $bad (logs: $keep)"
        NOTE[$mode]="${NOTE[$mode]:-}${NOTE[$mode]:+; }run $r discarded: $bad"
        return 1
    fi
    if [ "$GEN_RX" = 0 ] && [ "${neigh:-0}" = 0 ]; then
        NOTE[$mode]="flowgate never resolved the generator's MAC (ARP exchange failed; see $glog)"
    fi
    record "$mode" "$GEN_RX"
}

# OVS-DPDK with conntrack SNAT (bench/ovs.sh), 2 queue pairs; one fresh OVS per run.
run_ovs() {
    local r=$1 glog=$WORK/gen-ovs-$1.log
    c2c_measure
    # DPDK 22.11's memif socket is abstract by default, and abstract unix sockets are per
    # network namespace: OVS runs in its own, so both ends use a socket file here.
    GEN_MEMIF_OPT=",socket-abstract=no" gen_start "$glog" || return 1
    local err
    if ! ovs_start > "$WORK/ovs-start.out"; then
        err=$(cat "$WORK/ovs-start.out")
        gen_cmd quit; exec 8>&-; stop_pid "$GEN_PID" INT 10
        NOTE[ovs]="${NOTE[ovs]:-}${NOTE[ovs]:+; }run $r: $err"
        local keep="$ROOT/bench/results/memif-discarded-ovs-$r-$(date +%s)"
        mkdir -p "$keep" && cp "$OVS_DIR"/*.log "$glog" "$keep"/ 2>/dev/null || true
        ovs_stop
        echo "  run $r/$ROUNDS  ovs: $err (logs: $keep)"
        return 1
    fi
    CPU_PIDS="gen:$GEN_PID dut:${OVS_PID:-}"
    gen_run "$glog"
    cpu_report "ovs/$r"
    local tx ct nat
    read -r tx ct nat <<<"$(ovs_counters)"
    local alive_after=1
    alive "$OVS_PID" || alive_after=0
    ovs_stop
    printf '  run %d/%d  %-10s flows %-7s %4sB  gen Rx-pps: %9s  Tx-pps: %9s  -> %6.3f Mpps  (ovs: transmitted %s, conntrack entries %s, SNATed to %s: %s)\n' \
        "$r" "$ROUNDS" ovs "$FLOWS" "$PKT" "$GEN_RX" "$GEN_TX" \
        "$(echo "$GEN_RX / 1000000" | bc -l)" "$tx" "$ct" "$OVS_PUBLIC" "$nat"
    echo "    $CPU_NOTE$(gen_queue_rx "$glog")"
    local bad=""
    if [ "$alive_after" = 0 ]; then bad="ovs-vswitchd died during the run"
    elif [ "$tx" = "?" ] || [ "$tx" = 0 ]; then bad="ovs transmitted nothing"
    elif [ "${nat:-0}" = 0 ]; then bad="ovs has no SNAT conntrack entries"
    fi
    if [ -n "$bad" ]; then
        echo "    run discarded: $bad"
        NOTE[ovs]="${NOTE[ovs]:-}${NOTE[ovs]:+; }run $r discarded: $bad"
        return 1
    fi
    record ovs "$GEN_RX"
}

mpps() { echo "$1" | awk '{ printf "%.3f", $1 / 1e6 }'; }

# --- what can run ---------------------------------------------------------------------

declare -A ENABLED
for m in "${ALL_MODES[@]}"; do NOTE[$m]="not run (not among --mode)"; done
for m in "${MODES[@]}"; do
    NOTE[$m]=""
    case "$m" in
        macswap|macswap-2q) ENABLED[$m]=1 ;;
        ovs)
            if why_not=$(ovs_available); then ENABLED[ovs]=1; else NOTE[ovs]=$why_not; fi ;;
        route|nat|lb|route-2q|nat-2q)
            if [ -z "$FLOWGATE" ] || [ ! -x "$FLOWGATE" ]; then
                NOTE[$m]="flowgate binary not found (cargo build --release, or --flowgate PATH)"
                continue
            fi
            cfg=$(write_config "$m")
            if ! out=$("$FLOWGATE" check-config "$cfg" 2>&1); then
                if [ "${m%-2q}" != route ]; then
                    NOTE[$m]="this flowgate has no $m stage (check-config: $(echo "$out" | head -n 1))"
                else
                    NOTE[route]="config refused: $(echo "$out" | head -n 1)"
                fi
                continue
            fi
            ENABLED[$m]=1 ;;
        *) die "unknown mode $m (${ALL_MODES[*]})" ;;
    esac
done
write_arp_pcap

echo "# flowgate link benchmark: net_memif, testpmd flowgen generator ($FLOWS flows, ${PKT}B frames)"
echo "# cpu: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores; $ROUNDS rounds x ${DURATION}s"
echo "# flowgate: ${FLOWGATE:-none}; testpmd: $(command -v "$TESTPMD")"

for r in $(seq 1 "$ROUNDS"); do
    for m in "${ALL_MODES[@]}"; do
        [ "${ENABLED[$m]:-0}" = 1 ] || continue
        Q=$(queues_of "$m")
        case "$m" in
            macswap*) run_macswap "$m" "$r" || true ;;
            ovs) run_ovs "$r" || true ;;
            *) run_flowgate "$m" "$r" || true ;;
        esac
    done
done

echo
echo "link: net_memif"
echo "flows: $FLOWS"
echo "frame_bytes: $PKT"
echo "rounds: $ROUNDS"
echo "run_seconds: $DURATION"
echo "flowgate_clean_exits: $FG_CLEAN/$FG_RUNS"
echo "placement_runs: near ${PLACED[near]:-0}, far ${PLACED[far]:-0}, mixed ${PLACED[mixed]:-0}, unknown ${PLACED[unknown]:-0} (c2c < / >= $C2C_NEAR_NS ns)"
echo "c2c_round_trip_ns:${C2C_ALL:- ?} (cpu 0 <-> 1 before/after each run, in run order)"
echo "contended_runs: $CONTENDED (a forwarding thread got < $CONTENDED_PCT % of its cpu)${CONTENDED_RUNS:+:$CONTENDED_RUNS}"
base=$(echo "${SAMPLES[macswap]:-}" | median)
for m in "${ALL_MODES[@]}"; do
    k=${m//-/_}
    s=${SAMPLES[$m]:-}
    med=$(echo "$s" | median)
    if [ -n "$med" ] && [ "$med" != 0 ]; then
        read -r mn mx <<<"$(echo "$s" | minmax)"
        echo "${k}_mpps_median: $(mpps "$med")"
        echo "${k}_mpps_min: $(mpps "$mn")"
        echo "${k}_mpps_max: $(mpps "$mx")"
        echo "${k}_mpps_samples:$(for x in $s; do printf ' %s' "$(mpps "$x")"; done)"
        for pl in near far; do
            pm=$(echo "${SAMPLES_P[$m/$pl]:-}" | median)
            [ -n "$pm" ] && echo "${k}_mpps_${pl}_median: $(mpps "$pm") ($(echo "${SAMPLES_P[$m/$pl]}" | wc -w) runs)"
        done
    else
        echo "${k}_mpps_median: n/a (${NOTE[$m]:-no traffic came back})"
    fi
done
# ratio KEY MODE BASE_MODE: median of MODE / median of BASE_MODE (same invocation).
ratio() {
    local base med
    base=$(echo "${SAMPLES[$3]:-}" | median)
    med=$(echo "${SAMPLES[$2]:-}" | median)
    if [ -z "$base" ] || [ "$base" = 0 ]; then
        echo "$1: n/a (${NOTE[$3]:-$3 baseline not measured})"
    elif [ -z "$med" ] || [ "$med" = 0 ]; then
        echo "$1: n/a (${NOTE[$2]:-no traffic came back})"
    else
        echo "$1: $(echo "$med $base" | awk '{ printf "%.3f", $1 / $2 }')"
    fi
}
for m in route nat lb; do ratio "${m}_vs_testpmd_macswap" "$m" macswap; done
ratio route_2q_vs_testpmd_macswap_2q route-2q macswap-2q
ratio nat_2q_vs_testpmd_macswap_2q nat-2q macswap-2q
ratio nat_2q_vs_ovs_dpdk_nat nat-2q ovs
ratio ovs_dpdk_nat_vs_testpmd_macswap_2q ovs macswap-2q
# The same ratios from runs of one vCPU placement only (see c2c): mixing placements is
# what made the medians bimodal. Printed when both modes have runs in that placement.
for pl in near far; do
    for pair in route:macswap nat:macswap lb:macswap route-2q:macswap-2q nat-2q:macswap-2q; do
        a=${pair%%:*}; b=${pair#*:}
        ma=$(echo "${SAMPLES_P[$a/$pl]:-}" | median); mb=$(echo "${SAMPLES_P[$b/$pl]:-}" | median)
        if [ -n "$ma" ] && [ -n "$mb" ] && [ "$mb" != 0 ]; then
            echo "${a//-/_}_vs_testpmd_${b//-/_}_${pl}: $(echo "$ma $mb" | awk '{ printf "%.3f", $1 / $2 }')"
        fi
    done
done
