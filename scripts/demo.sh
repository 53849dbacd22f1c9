#!/usr/bin/env bash
# flowgate demo: the appliance as a NAT gateway between a private namespace and a "public"
# one, over net_af_packet.
#
#   netns fgd-c                      root ns: flowgate                     netns fgd-s
#   fgdc1 10.0.1.2/24 ==veth== fgdc0 [client 10.0.1.1 | server 198.51.100.1] fgds0 ==veth== fgds1 198.51.100.2/24
#   (private, default via 10.0.1.1)   NAT gateway: 10.0.1.0/24 -> 198.51.100.10      (no route to 10.0.0.0/8)
#
# Sends ping, HTTP (curl -> python3 http.server) and UDP through it, shows what the server
# side saw (only the gateway's public IP) and a metrics excerpt, stops the appliance
# (SIGTERM) and removes everything (trap on EXIT). Run as root after `make build` (or just
# `make demo`).
#
# Env: FLOWGATE_BIN (default target/release/flowgate), DEMO_METRICS_PORT (default 9187).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${FLOWGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/flowgate}
PY=/usr/bin/python3
NS_C=fgd-c
NS_S=fgd-s
METRICS_PORT=${DEMO_METRICS_PORT:-9187}
FILE_PREFIX="fgdemo$$"
DEMO_NAME=demo
DEMO_NAMESPACES=("$NS_C" "$NS_S")
DEMO_ROOT_LINKS=(fgdc0 fgds0)
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

in_c() { ip netns exec "$NS_C" "$@"; }
in_s() { ip netns exec "$NS_S" "$@"; }

step "topology: namespaces $NS_C, $NS_S and two veth pairs"
netns_up
mkveth fgdc0 fgdc1 "$NS_C" 10.0.1.2/24
mkveth fgds0 fgds1 "$NS_S" 198.51.100.2/24
in_c ip route add default via 10.0.1.1
# The server gets no route back to 10.0.0.0/8: replies can only come back through the NAT.
echo "client: $(in_c ip -br addr show fgdc1)"
echo "server: $(in_s ip -br addr show fgds1)"

step "config"
cat > "$WORK/flowgate.yaml" <<YAML
eal:
  args: [--no-pci, --no-huge, -m, "512", --file-prefix, $FILE_PREFIX]
lcores: {main: 0, workers: [1]}
mempool: {mbufs: 4095, cache: 256, data_room: 10240}
ports:
  - name: client
    device: net_af_packet0,iface=fgdc0,framesz=10240,blocksz=20480
    addresses: [10.0.1.1/24]
    mtu: 1500
  - name: server
    device: net_af_packet1,iface=fgds0,framesz=10240,blocksz=20480
    addresses: [198.51.100.1/24]
    mtu: 1500
routes: []
nat_gateways:
  - id: demo-nat
    inside_prefixes: [10.0.1.0/24]
    public_ips: [198.51.100.10]
metrics: {listen: "$METRICS"}
worker: {burst: 32, tx_drain_us: 100, idle_sleep_us: 50}
neighbor: {timeout_s: 300, pending_max: 64}
YAML
cat "$WORK/flowgate.yaml"
timeout 10 "$BIN" check-config "$WORK/flowgate.yaml"

step "start: $BIN run -c $WORK/flowgate.yaml"
"$BIN" run -c "$WORK/flowgate.yaml" > "$WORK/flowgate.log" 2>&1 &
FG_PID=$!
ready=0
for _ in $(seq 100); do
    if ! kill -0 "$FG_PID" 2>/dev/null; then break; fi
    if curl -sf --max-time 1 "http://$METRICS/metrics" 2>/dev/null | grep -q '^flowgate_'; then
        ready=1; break
    fi
    sleep 0.2
done
if [ "$ready" != 1 ]; then
    echo "flowgate did not serve /metrics within 20 s; its log:"
    cat "$WORK/flowgate.log"
    exit 1
fi
echo "flowgate (pid $FG_PID) is up, metrics on http://$METRICS/metrics"

step "ping"
check "client -> 10.0.1.1 (the appliance)" in_c timeout 10 ping -n -c 3 -i 0.2 -W 1 10.0.1.1
check "client -> 198.51.100.2 (the server, through the NAT)" in_c timeout 10 ping -n -c 3 -i 0.2 -W 1 198.51.100.2

step "HTTP: curl in $NS_C -> python3 http.server on 198.51.100.2:8080 in $NS_S"
mkdir -p "$WORK/www"
echo "hello from the server side of flowgate" > "$WORK/www/hello.txt"
in_s timeout 120 "$PY" -u -m http.server 8080 --bind 198.51.100.2 --directory "$WORK/www" \
    > "$WORK/http.log" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 50); do in_s ss -Hltn 'sport = :8080' | grep -q . && break; sleep 0.1; done
body=""
if body=$(in_c curl -sS --max-time 5 http://198.51.100.2:8080/hello.txt); then
    echo "client got: $body"
fi
check "HTTP body" test "$body" = "hello from the server side of flowgate"

step "UDP: python3 echo server on 198.51.100.2:9999, nc -u from the client"
in_s timeout 120 "$PY" -u -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.2", 9999))
while True:
    d, a = s.recvfrom(2048)
    print("udp from %s:%d: %r" % (a[0], a[1], d), flush=True)
    s.sendto(b"echo: " + d, a)
' > "$WORK/udp.log" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 50); do in_s ss -Hlnu 'sport = :9999' | grep -q . && break; sleep 0.1; done
reply=$(printf 'hello over udp' | in_c timeout 5 nc -u -w 1 198.51.100.2 9999 || true)
echo "client got: $reply"
check "UDP reply" test "$reply" = "echo: hello over udp"

step "what the server side saw (only the NAT gateway's public IP 198.51.100.10)"
grep -h -E '^(198|10)\.|udp from' "$WORK/http.log" "$WORK/udp.log" || true
check "server saw the public IP" grep -q '198\.51\.100\.10' "$WORK/http.log"
check "server never saw the private IP" bash -c "! grep -q '10\.0\.1\.2' '$WORK/http.log' '$WORK/udp.log'"

step "metrics excerpt"
curl -s --max-time 5 "http://$METRICS/metrics" \
    | grep -E '^flowgate_(port_(rx|tx)_packets_total|forwarded_packets_total|icmp_echo_requests_total|neighbor_entries|mempool_mbufs_in_use|build_info|nat_(active_connections|connection_attempts_total|connections_established_total|port_allocation_errors_total|packets_total)|packets_dropped_total\{reason="(no_route|ttl_exceeded|not_our_mac|unknown_ethertype|nat_no_mapping)"\})' \
    || true

stop_flowgate
summary
