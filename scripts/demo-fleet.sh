#!/usr/bin/env bash
# flowgate fleet demo: shuffle-sharded placement in etcd, node failure, re-placement.
#
#   etcd (127.0.0.1, temp data) <- flowgate controller (elected; k=2 of 6 nodes, overlap m=1)
#        ^   ^                  <- flowgate node-agent n1..n6 (leased membership, TTL 3 s)
#        |   +------------------ flowgate fabric: routes in netns fgf-r
#   netns fgf-r (router) ==veth== netns fgf-n1..fgf-n6 (10.98.i.2/24)
#
# Prints the overlap simulation, the placement table, the router's ECMP routes, then
# SIGKILLs one node agent and shows its tenants re-placed and the routes updated. Removes
# everything on exit. Run as root after `make build` (or `make demo-fleet`).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${FLOWGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/flowgate}
FLEET=demo
NODES=6
TENANTS=8
TTL=3
R=fgf-r

if [ "$(id -u)" -ne 0 ]; then
    echo "demo-fleet: needs root (network namespaces)" >&2
    exit 1
fi
[ -x "$BIN" ] || { echo "demo-fleet: $BIN not found; run 'make build' first" >&2; exit 1; }
for t in etcd etcdctl ip; do
    command -v "$t" >/dev/null || { echo "demo-fleet: $t missing; run 'make setup'" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/flowgate-demo-fleet.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for i in $(seq 1 $NODES); do ip netns del "fgf-n$i" 2>/dev/null; done
    ip netns del $R 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EP="http://127.0.0.1:$(port)"
PEER="http://127.0.0.1:$(port)"
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$EP" "$@"; }
say() { printf '\n== %s\n' "$*"; }

say "shuffle sharding: overlap of two tenants' shards, N=8 k=3 (simulated vs hypergeometric)"
"$BIN" shard --nodes 8 --k 3 --trials 200000
say "with the stateful sharder, N=$NODES k=2 m=1: no pair shares more than one node"
"$BIN" shard --nodes $NODES --k 2 --m 1 --tenants $TENANTS --trials 10000 | sed -n '/stateful/,$p'

say "etcd on $EP (data in $WORK)"
etcd --name demo --data-dir "$WORK/etcd" --listen-client-urls "$EP" --advertise-client-urls "$EP" \
    --listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER" \
    --initial-cluster "demo=$PEER" --log-level warn >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.2; done

say "router namespace $R with $NODES node namespaces"
ip netns add $R
for i in $(seq 1 $NODES); do
    ip netns add "fgf-n$i"
    ip link add "fgfr$i" netns $R type veth peer name eth0 netns "fgf-n$i"
    ip -n $R addr add "10.98.$i.1/24" dev "fgfr$i"
    ip -n $R link set "fgfr$i" up
    ip -n "fgf-n$i" addr add "10.98.$i.2/24" dev eth0
    ip -n "fgf-n$i" link set eth0 up
done

say "tenants (NAT gateways): public IP 203.0.113.(10+t), inside 10.(100+t).0.0/24"
for t in $(seq 0 $((TENANTS - 1))); do
    ctl put "/flowgate/$FLEET/tenants/t$t" "kind: nat
public: [203.0.113.$((10 + t))]
inside: [10.$((100 + t)).0.0/24]" >/dev/null
done

for i in $(seq 1 $NODES); do
    "$BIN" node-agent --etcd "$EP" --fleet $FLEET --node "n$i" --addr "10.98.$i.2" --ttl $TTL \
        --state "$WORK/n$i.state" --status "$WORK/n$i.prom" >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
    eval "AGENT_$i=$!"
done
"$BIN" controller --etcd "$EP" --fleet $FLEET --k 2 --m 1 --min-nodes $NODES --ttl $TTL >"$WORK/controller.log" 2>&1 &
PIDS+=($!)
"$BIN" fabric --etcd "$EP" --fleet $FLEET --netns $R >"$WORK/fabric.log" 2>&1 &
PIDS+=($!)

table() {
    printf '  %-8s %-10s %s\n' tenant shard "router: ip route show 203.0.113.x"
    for t in $(seq 0 $((TENANTS - 1))); do
        shard=$(ctl get --print-value-only "/flowgate/$FLEET/placements/t$t")
        vias=$(ip -n $R route show "203.0.113.$((10 + t))" | grep -o 'via [0-9.]*' | tr '\n' ' ')
        printf '  %-8s %-10s %s\n' "t$t" "$shard" "$vias"
    done
}
wait_placed() {
    for _ in $(seq 100); do
        [ "$(ctl get --prefix --keys-only "/flowgate/$FLEET/placements/" | grep -c .)" -ge $TENANTS ] && return 0
        sleep 0.1
    done
    return 1
}
wait_placed || { echo "demo-fleet: not placed"; cat "$WORK/controller.log"; exit 1; }
sleep 1

say "live nodes (leased keys)"
ctl get --prefix "/flowgate/$FLEET/nodes/" | paste - - | sed 's/^/  /'
say "placement table and the router's ECMP next hops (node n<i> = 10.98.<i>.2)"
table
say "policy routing of inside prefixes"
{ ip -n $R rule show | grep '^10000:' || true; } | sed 's/^/  /'

VICTIM=$(ctl get --print-value-only "/flowgate/$FLEET/placements/t0" | cut -d, -f1)
VI=${VICTIM#n}
VPID=$(eval echo "\$AGENT_$VI")
say "SIGKILL node agent $VICTIM (pid $VPID); its lease expires within ${TTL} s"
T0=$(date +%s.%N)
{ kill -9 "$VPID"; wait "$VPID"; } 2>/dev/null || true
# (Captured first: with pipefail, grep -q closing the pipe early would look like a failure.)
for _ in $(seq 300); do
    v=$(ctl get --prefix --print-value-only "/flowgate/$FLEET/placements/")
    grep -qw "$VICTIM" <<<"$v" || break
    sleep 0.05
done
for _ in $(seq 100); do
    v=$(ip -n $R route show table all)
    grep -q "10.98.$VI.2 " <<<"$v" || break
    sleep 0.05
done
T1=$(date +%s.%N)
printf '  re-placed and rerouted after %.2f s\n' "$(echo "$T1 - $T0" | bc)"
say "controller log"
grep placement "$WORK/controller.log" | grep -- '->.*live' | grep -v ': - ->' | sed 's/^/  /'
say "placement table after the failure"
table
say "tenants served per node (node agents' state files)"
for i in $(seq 1 $NODES); do
    note=""; [ "$i" = "$VI" ] && note="(killed: the last state it wrote)"
    printf '  n%s: %s %s\n' "$i" "$(grep -E '^  [a-z0-9]+:$' "$WORK/n$i.state" 2>/dev/null | tr -d ' :' | tr '\n' ' ')" "$note"
done
say "done (cleanup)"
