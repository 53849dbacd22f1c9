#!/usr/bin/env bash
# flowgate demo, load-balancer half: the appliance as a two-armed network load balancer
# over net_af_packet (the topology of conf/test-lb.yaml).
#
#   netns fgd-lc                     root ns: flowgate                      netns fgd-lt
#   fgdf1 203.0.113.2/24 ==veth== fgdf0 [front 203.0.113.1 | back 10.1.0.1] fgdb0 ==veth== fgdb1
#   (default via 203.0.113.1)         VIP 198.51.100.10, LB address 10.1.0.100      10.1.0.11..14/24
#                                                                          (default via 10.1.0.1)
#
# Listener tcp/80 -> group "web" (10.1.0.11..14:8080, weights 1:2:3:0, client IP kept);
# listener tcp_udp/53 -> group "echo" (10.1.0.14:5353, full NAT: the target sees 10.1.0.100).
# Sends 60 HTTP requests to the VIP and counts them per target, shows a target's log (the
# real client IP), a UDP echo through the full-NAT listener, a metrics excerpt, stops the
# appliance (SIGTERM) and removes everything (trap on EXIT). Run as root after `make build`
# (or just `make demo`, which runs scripts/demo.sh and then this).
#
# No exception port, so no health checks run (flowgate warns at start; every target serves).
#
# Env: FLOWGATE_BIN (default target/release/flowgate), DEMO_METRICS_PORT (default 9188).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${FLOWGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/flowgate}
PY=/usr/bin/python3
NS_C=fgd-lc
NS_T=fgd-lt
VIP=198.51.100.10
LB_ADDR=10.1.0.100
TARGETS=(10.1.0.11 10.1.0.12 10.1.0.13 10.1.0.14)
WEIGHTS=(1 2 3 0)
ECHO_TARGET=10.1.0.14
REQUESTS=60
METRICS_PORT=${DEMO_METRICS_PORT:-9188}
FILE_PREFIX="fgdemolb$$"
DEMO_NAME=demo-lb
DEMO_NAMESPACES=("$NS_C" "$NS_T")
DEMO_ROOT_LINKS=(fgdf0 fgdb0)
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh

in_c() { ip netns exec "$NS_C" "$@"; }
in_t() { ip netns exec "$NS_T" "$@"; }

step "topology: namespaces $NS_C (client), $NS_T (targets) and two veth pairs"
netns_up
mkveth fgdf0 fgdf1 "$NS_C" 203.0.113.2/24
mkveth fgdb0 fgdb1 "$NS_T" "${TARGETS[@]/%//24}"
in_c ip route add default via 203.0.113.1
# Client IP preservation: the targets see 203.0.113.2 and reply through the appliance.
in_t ip route add default via 10.1.0.1
echo "client:  $(in_c ip -br addr show fgdf1)"
echo "targets: $(in_t ip -br addr show fgdb1)"

step "config"
cat > "$WORK/flowgate.yaml" <<YAML
eal:
  args: [--no-pci, --no-huge, -m, "512", --file-prefix, $FILE_PREFIX]
lcores: {main: 0, workers: [1]}
mempool: {mbufs: 4095, cache: 256, data_room: 10240}
ports:
  - name: front
    device: net_af_packet0,iface=fgdf0,framesz=10240,blocksz=20480
    addresses: [203.0.113.1/24]
    mtu: 1500
  - name: back
    device: net_af_packet1,iface=fgdb0,framesz=10240,blocksz=20480
    addresses: [10.1.0.1/24]
    mtu: 1500
routes: []
load_balancers:
  - id: demo
    vips: [$VIP]
    lb_addresses: [$LB_ADDR]       # sources of full-NAT flows (preserve_client_ip: false)
    maglev_table_size: 65537
    flows_per_core: 16384
    listeners:
      - {protocol: tcp, port: 80, target_group: web}
      - {protocol: tcp_udp, port: 53, target_group: echo}
    target_groups:
      - name: web
        preserve_client_ip: true     # DNAT only: targets see the client's address
        targets:
          - {ip: ${TARGETS[0]}, port: 8080, weight: ${WEIGHTS[0]}}
          - {ip: ${TARGETS[1]}, port: 8080, weight: ${WEIGHTS[1]}}
          - {ip: ${TARGETS[2]}, port: 8080, weight: ${WEIGHTS[2]}}
          - {ip: ${TARGETS[3]}, port: 8080, weight: ${WEIGHTS[3]}}   # 0 = draining
      - name: echo
        preserve_client_ip: false    # full NAT: targets see $LB_ADDR
        targets:
          - {ip: $ECHO_TARGET, port: 5353}
metrics: {listen: "$METRICS"}
worker: {burst: 32, tx_drain_us: 100, idle_sleep_us: 50}
neighbor: {timeout_s: 300, pending_max: 64}
YAML
cat "$WORK/flowgate.yaml"
timeout 10 "$BIN" check-config "$WORK/flowgate.yaml"

step "targets: python3 HTTP server on each of ${TARGETS[*]} :8080, UDP echo on $ECHO_TARGET:5353"
cat > "$WORK/target.py" <<'PY'
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, ip = sys.argv[1], sys.argv[2]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        print("HTTP from %s:%d" % self.client_address, flush=True)
        body = ("%s (%s) saw client %s\n" % (name, ip, self.client_address[0])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
def echo():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((ip, 5353))
    while True:
        d, a = u.recvfrom(2048)
        print("UDP from %s:%d: %r" % (a[0], a[1], d), flush=True)
        u.sendto(("%s echo: %s (you are %s)" % (name, d.decode(errors="replace"), a[0])).encode(), a)
if len(sys.argv) > 3:
    threading.Thread(target=echo, daemon=True).start()
ThreadingHTTPServer((ip, 8080), H).serve_forever()
PY
for i in "${!TARGETS[@]}"; do
    ip=${TARGETS[$i]}
    extra=()
    [ "$ip" = "$ECHO_TARGET" ] && extra=(udp)
    in_t timeout 180 "$PY" -u "$WORK/target.py" "t$((i + 1))" "$ip" "${extra[@]}" \
        > "$WORK/t$((i + 1)).log" 2>&1 &
    BG_PIDS+=($!)
done
for ip in "${TARGETS[@]}"; do
    for _ in $(seq 50); do in_t ss -Hltn "src $ip:8080" | grep -q . && break; sleep 0.1; done
done
for _ in $(seq 50); do in_t ss -Hlnu "src $ECHO_TARGET:5353" | grep -q . && break; sleep 0.1; done
in_t ss -Hltnu | awk '{print "  listening: " $1 " " $5}'

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

step "HTTP: $REQUESTS x curl http://$VIP/ from $NS_C (weights ${WEIGHTS[*]})"
ok=0
: > "$WORK/bodies"
for _ in $(seq "$REQUESTS"); do
    if in_c curl -sS --max-time 5 "http://$VIP/" >> "$WORK/bodies"; then ok=$((ok + 1)); fi
done
echo "first answer: $(head -n 1 "$WORK/bodies")"
echo "answered: $ok/$REQUESTS"
declare -A count
for i in "${!TARGETS[@]}"; do
    count[$i]=$(grep -c "^t$((i + 1)) " "$WORK/bodies" || true)
    printf '  t%d %-10s weight %d: %3d requests\n' $((i + 1)) "${TARGETS[$i]}" "${WEIGHTS[$i]}" "${count[$i]}"
done
check "every request answered" test "$ok" = "$REQUESTS"
check "weight-0 target got none" test "${count[3]}" = 0
check "every weighted target got some" test "${count[0]}" -gt 0 -a "${count[1]}" -gt 0 -a "${count[2]}" -gt 0

step "client IP preservation: t3's log (it saw the client 203.0.113.2, not the appliance)"
head -n 5 "$WORK/t3.log"
check "target saw the client's IP" grep -q '^HTTP from 203\.0\.113\.2:' "$WORK/t3.log"

step "UDP through the full-NAT listener: nc -u $VIP 53 -> $ECHO_TARGET:5353"
reply=$(printf 'hello over udp' | in_c timeout 5 nc -u -w 1 "$VIP" 53 || true)
echo "client got: $reply"
echo "target log: $(grep '^UDP' "$WORK/t4.log" | head -n 1)"
check "UDP echo reply" grep -q 'echo: hello over udp' <<< "$reply"
check "target saw the LB address $LB_ADDR" grep -q "^UDP from ${LB_ADDR//./\\.}:" "$WORK/t4.log"

step "metrics excerpt (flowgate_lb_*, zero-valued series left out)"
curl -s --max-time 5 "http://$METRICS/metrics" | grep '^flowgate_lb_' \
    | grep -v -E ' 0$' | head -n 40 || true

stop_flowgate
summary
