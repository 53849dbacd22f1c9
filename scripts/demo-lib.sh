# Shared part of scripts/demo.sh and scripts/demo-lb.sh (sourced, not run): metrics port,
# root check, work dir, cleanup of the appliance / background processes / namespaces / veth
# ends, the step/check helpers and the namespace + veth topology helpers.
#
# The caller sets, before sourcing (from the repository root):
#   DEMO_NAME          name in messages ("demo", "demo-lb")
#   DEMO_NAMESPACES    array of the network namespaces the demo creates
#   DEMO_ROOT_LINKS    array of the root-side veth ends the demo creates
#   METRICS_PORT       preferred metrics port (another is picked if it is taken)
#   FILE_PREFIX        DPDK --file-prefix of the appliance
#   BIN                the flowgate binary
# and gets: METRICS, WORK, FG_PID, BG_PIDS, FAILED, cleanup, step, check, netns_up, mkveth,
# stop_flowgate, summary.

if ss -Hltn "sport = :$METRICS_PORT" 2>/dev/null | grep -q .; then
    METRICS_PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
METRICS="127.0.0.1:${METRICS_PORT}"

if [ "$(id -u)" -ne 0 ]; then
    echo "$DEMO_NAME: needs root (network namespaces, veth, DPDK)" >&2
    exit 1
fi
[ -x "$BIN" ] || { echo "$DEMO_NAME: $BIN not found; run 'make build' first" >&2; exit 1; }

WORK=$(mktemp -d "/tmp/flowgate-$DEMO_NAME.XXXXXX")
FG_PID=""
BG_PIDS=()

cleanup() {
    set +e
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ -n "$FG_PID" ] && kill -0 "$FG_PID" 2>/dev/null; then
        kill -TERM "$FG_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$FG_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$FG_PID" 2>/dev/null
    fi
    for ns in "${DEMO_NAMESPACES[@]}"; do
        if [ -e "/run/netns/$ns" ]; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
            ip netns del "$ns" 2>/dev/null
        fi
    done
    for l in "${DEMO_ROOT_LINKS[@]}"; do ip link del "$l" 2>/dev/null; done
    rm -rf "/var/run/dpdk/$FILE_PREFIX" "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n=== %s\n' "$*"; }
FAILED=()
check() { # check NAME CMD...
    local name=$1; shift
    if "$@"; then echo "[ok]   $name"; else echo "[FAIL] $name"; FAILED+=("$name"); fi
}

# A leftover from an interrupted run goes first.
cleanup
mkdir -p "$WORK"

# Creates the demo's namespaces: loopback up, IPv6 off.
netns_up() {
    for ns in "${DEMO_NAMESPACES[@]}"; do
        ip netns add "$ns"
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
}

mkveth() { # root-end peer-end netns address...
    local root=$1 peer=$2 ns=$3; shift 3
    ip link add "$root" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    # The root-side end belongs to flowgate (af_packet): no IPv6, no ARP, no forwarding by
    # the root kernel. Checksum offload stays at the kernel default (flowgate completes the
    # partial checksums af_packet hands it). Only TSO/GSO go off on the host end: with them
    # the host hands af_packet GSO super-frames of up to 64 KiB, which DPDK's af_packet PMD
    # truncates to its ring frame (flowgate drops and counts them); a NIC never sends them.
    sysctl -qw "net.ipv6.conf.$root.disable_ipv6=1" "net.ipv4.conf.$root.forwarding=0"
    ip link set "$root" arp off
    ip netns exec "$ns" timeout 10 ethtool -K "$peer" tso off gso off >/dev/null 2>&1 || true
    ip link set "$root" up
    for a in "$@"; do ip netns exec "$ns" ip addr add "$a" dev "$peer"; done
    ip netns exec "$ns" ip link set "$peer" up
}

# Stops the appliance (SIGTERM, up to 15 s), shows the end of its log and checks the exit.
stop_flowgate() {
    step "stop (SIGTERM)"
    kill -TERM "$FG_PID"
    local rc=0
    for _ in $(seq 75); do kill -0 "$FG_PID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$FG_PID" 2>/dev/null; then
        echo "flowgate still running 15 s after SIGTERM"; rc=1
    else
        wait "$FG_PID" || rc=$?
    fi
    FG_PID=""
    tail -n 20 "$WORK/flowgate.log"
    check "clean exit (status 0)" test "$rc" = 0
}

# The verdict: exit 1 if any check failed.
summary() {
    echo
    if [ ${#FAILED[@]} -eq 0 ]; then
        echo "$DEMO_NAME: all steps passed"
    else
        echo "$DEMO_NAME: FAILED: ${FAILED[*]}"
        exit 1
    fi
}
