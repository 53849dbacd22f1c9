# bench/ovs.sh — the OVS-DPDK peer of the link benchmark (sourced by bench/memif.sh, which
# provides WORK, SOCK, PIDS, spawn, alive, wait_gone, stop_pid).
#
# One OVS instance per run, all of it under $WORK/ovs: its own database (ovsdb-server on
# a unix socket there), run/log directories (OVS_RUNDIR...), DPDK --file-prefix fgb-ovs
# with --in-memory (no hugepage files left behind) and 512 MiB of hugepages, main lcore on
# cpu 0 and the PMD thread on cpu 1 (as every other DUT). ovs-vswitchd runs in a network
# namespace of its own (`unshare --net`): the netdev bridge's internal port is a tap device,
# which must not appear on the host (so the memif socket is a file, `socket-abstract=no`:
# abstract sockets do not cross network namespaces). The bridge has one port, the memif client
# (net_memif0,role=client, 2 rx queues), and two rules: conntrack SNAT to 198.18.0.1, then
# back out the port it came in on toward the generator's MAC, TTL decremented: flowgate's
# NAT case (established flows: the first packet commits, the rest hit the connection).

OVS_VSWITCHD=${OVS_VSWITCHD:-/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk}
OVS_SCHEMA=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
OVS_PUBLIC=198.18.0.1
OVS_DIR=""
OVS_PID=""
OVSDB_PID=""

# Is the OVS-DPDK peer usable? Installs Debian's openvswitch-switch-dpdk when missing
# (root and apt only; says so). Prints a reason and fails otherwise.
ovs_available() {
    if [ ! -x "$OVS_VSWITCHD" ] || ! command -v ovsdb-server >/dev/null; then
        if command -v apt-get >/dev/null; then
            echo "# OVS-DPDK peer: installing Debian openvswitch-switch-dpdk (not installed)" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q openvswitch-switch-dpdk \
                > "$WORK/ovs-install.log" 2>&1 || true
        fi
    fi
    if [ ! -x "$OVS_VSWITCHD" ]; then
        echo "ovs-vswitchd-dpdk not installed (apt-get install openvswitch-switch-dpdk)"
        return 1
    fi
    command -v unshare >/dev/null || { echo "unshare not found (util-linux)"; return 1; }
}

ovs_vsctl() { ovs-vsctl --db="unix:$OVS_DIR/db.sock" --timeout=20 "$@"; }
ovs_appctl() { ovs-appctl -t "$OVS_DIR/ovs-vswitchd.ctl" --timeout=20 "$@"; }

# Start OVS and connect its memif client port to the generator (already listening on
# $SOCK). Returns 1 (with the log's tail on stdout) when the port does not come up.
ovs_start() {
    OVS_DIR=$WORK/ovs
    rm -rf "$OVS_DIR"
    mkdir -p "$OVS_DIR"
    export OVS_RUNDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR OVS_SYSCONFDIR=$OVS_DIR
    ovsdb-tool create "$OVS_DIR/conf.db" "$OVS_SCHEMA"
    OVSDB_PID=$(SPAWN_LOG=$OVS_DIR/ovsdb-server.out spawn ovsdb-server "$OVS_DIR/conf.db" \
        --remote="punix:$OVS_DIR/db.sock" --unixctl="$OVS_DIR/ovsdb-server.ctl" \
        --pidfile="$OVS_DIR/ovsdb-server.pid" --log-file="$OVS_DIR/ovsdb-server.log" --no-chdir)
    PIDS+=("$OVSDB_PID")
    local i
    for i in $(seq 1 50); do [ -S "$OVS_DIR/db.sock" ] && break; sleep 0.1; done
    ovs_vsctl --no-wait init
    ovs_vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
        other_config:dpdk-lcore-mask=0x1 other_config:pmd-cpu-mask=0x2 \
        other_config:dpdk-socket-mem=512 \
        "other_config:dpdk-extra=--file-prefix=fgb-ovs --in-memory --no-pci --log-level=lib.eal:warning"
    OVS_PID=$(SPAWN_LOG=$OVS_DIR/ovs-vswitchd.out spawn unshare --net "$OVS_VSWITCHD" \
        "unix:$OVS_DIR/db.sock" --unixctl="$OVS_DIR/ovs-vswitchd.ctl" \
        --pidfile="$OVS_DIR/ovs-vswitchd.pid" --log-file="$OVS_DIR/ovs-vswitchd.log" --no-chdir)
    PIDS+=("$OVS_PID")
    for i in $(seq 1 100); do [ -S "$OVS_DIR/ovs-vswitchd.ctl" ] && break; sleep 0.1; done
    ovs_vsctl add-br br0 -- set bridge br0 datapath_type=netdev >/dev/null &&
        ovs_vsctl add-port br0 link -- set Interface link type=dpdk \
            "options:dpdk-devargs=net_memif0,role=client,socket=$SOCK,socket-abstract=no,id=0,mac=00:01:02:03:04:01" \
            options:n_rxq=2 >/dev/null &&
        ovs-ofctl del-flows "$OVS_DIR/br0.mgmt" &&
        ovs-ofctl add-flow "$OVS_DIR/br0.mgmt" \
            "table=0,priority=10,ip,in_port=link,actions=ct(commit,nat(src=$OVS_PUBLIC),table=1)" &&
        ovs-ofctl add-flow "$OVS_DIR/br0.mgmt" \
            "table=1,priority=10,ip,actions=mod_dl_src:00:01:02:03:04:01,mod_dl_dst:00:01:02:03:04:00,dec_ttl,in_port" ||
        { echo "ovs bridge setup failed: $(tail -n 3 "$OVS_DIR/ovs-vswitchd.log" | tr '\n' ' ')"; return 1; }
    for i in $(seq 1 100); do
        [ "$(ovs_vsctl get Interface link link_state 2>/dev/null)" = up ] && return 0
        alive "$OVS_PID" || break
        sleep 0.1
    done
    echo "ovs memif port not up: $(ovs_vsctl get Interface link error 2>/dev/null) $(tail -n 3 "$OVS_DIR/ovs-vswitchd.log" | tr '\n' ' ')"
    return 1
}

# After a run: "tx_packets conntrack_entries translated_entries" (? when unreachable).
ovs_counters() {
    local tx ct nat
    tx=$(ovs_vsctl get Interface link statistics:tx_packets 2>/dev/null || echo "?")
    ct=$(ovs_appctl dpctl/ct-stats-show 2>/dev/null | awk '/Total:/ {print $2; exit}')
    nat=$(ovs_appctl dpctl/dump-conntrack 2>/dev/null | grep -c "dst=$OVS_PUBLIC," || true)
    echo "${tx:-?} ${ct:-0} ${nat:-0}"
}

# Stop OVS cleanly (bridge deleted, `exit --cleanup`, database server exit) and remove
# its directory. Safe to call when nothing runs.
ovs_stop() {
    [ -n "$OVS_DIR" ] || return 0
    if [ -n "$OVS_PID" ] && alive "$OVS_PID"; then
        ovs_vsctl del-br br0 >/dev/null 2>&1 || true
        ovs_appctl exit --cleanup >/dev/null 2>&1 || kill -TERM "$OVS_PID" 2>/dev/null || true
        wait_gone "$OVS_PID" 15
    fi
    if [ -n "$OVSDB_PID" ] && alive "$OVSDB_PID"; then
        ovs-appctl -t "$OVS_DIR/ovsdb-server.ctl" exit >/dev/null 2>&1 ||
            kill -TERM "$OVSDB_PID" 2>/dev/null || true
        wait_gone "$OVSDB_PID" 5
    fi
    if [ "${KEEP_WORK:-0}" != 1 ]; then rm -rf "$OVS_DIR"; fi
    OVS_PID=""; OVSDB_PID=""; OVS_DIR=""
}
