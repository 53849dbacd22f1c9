//! Traffic generators for the noisy-neighbour tests (tests/noisy_neighbour.rs on one node,
//! tests/fleet_dataplane.rs across the fleet): python run inside a test namespace.
//! Used as `#[path = "common/flood.rs"] mod flood;`.
#![allow(dead_code)]

/// A bounded raw-socket flood: argv = mode (syn|udp), src, dst, dport, pps, seconds, max
/// packets. `syn`: one SYN per source port 10000..59999 in turn (a new flow each); `udp`:
/// 64-byte datagrams from 4 source ports (a packet-rate flood on 4 flows). Paced per
/// millisecond; prints `sent N secs S`.
pub const FLOOD: &str = r#"
import socket, struct, sys, time, random
mode, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
dport, pps, secs, maxn = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sa, da = socket.inet_aton(src), socket.inet_aton(dst)
def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
def iphdr(proto, l4len):
    # The kernel fills the checksum and the IP ID (IP_HDRINCL, raw(7)).
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4len, 0, 0x4000, 64, proto, 0, sa, da)
pkts = []
if mode == "syn":
    for sport in range(10000, 60000):
        tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
        c = csum(sa + da + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        pkts.append(iphdr(6, len(tcp)) + tcp)
else:
    pay = b"x" * 64
    for sport in (40001, 40002, 40003, 40004):
        udp = struct.pack("!HHHH", sport, dport, 8 + len(pay), 0) + pay
        pkts.append(iphdr(17, len(udp)) + udp)
print("ready", flush=True)
n, t0, addr = 0, time.time(), (dst, 0)
end = t0 + secs
while n < maxn:
    now = time.time()
    if now >= end:
        break
    due = min(int((now - t0) * pps), maxn)
    if n >= due:
        time.sleep(0.001)
        continue
    while n < due:
        try:
            s.sendto(pkts[n % len(pkts)], addr)
        except OSError:
            pass
        n += 1
print("sent %d secs %.3f" % (n, time.time() - t0), flush=True)
"#;

/// argv = host, port, path, expected length, requests, spacing (s): one new TCP connection
/// per request (HTTP/1.0), 3 s timeout; prints `ok`, `fail`, `p50_ms`, `p99_ms`, `secs`.
pub const HTTP_CLIENT: &str = r#"
import http.client, sys, time
host, port, path, want = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
n, spacing = int(sys.argv[5]), float(sys.argv[6])
ok, fail, lat, errs = 0, 0, [], {}
t0 = time.time()
for i in range(n):
    st = time.time()
    try:
        c = http.client.HTTPConnection(host, port, timeout=3)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status == 200 and len(body) == want:
            ok += 1
            lat.append((time.time() - st) * 1000.0)
        else:
            fail += 1
            errs["status %d len %d" % (r.status, len(body))] = errs.get("status", 0) + 1
    except Exception as e:
        fail += 1
        k = type(e).__name__
        errs[k] = errs.get(k, 0) + 1
    rest = st + spacing - time.time()
    if rest > 0:
        time.sleep(rest)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1
print("ok", ok)
print("fail", fail)
print("p50_ms %.1f" % pct(0.5))
print("p99_ms %.1f" % pct(0.99))
print("secs %.2f" % (time.time() - t0))
print("errors", errs, flush=True)
"#;

/// The number after `key ` in a generator's output.
pub fn kv(out: &str, key: &str) -> f64 {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` in:\n{out}"))
}
