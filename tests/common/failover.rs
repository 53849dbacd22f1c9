//! Pieces shared by the failover tests (tests/replication.rs, tests/fleet_replication.rs):
//! python helpers they run in namespaces, and the checks a failover is judged by (the
//! server's peer address, TCP resets seen, sha256 of the download).

#![allow(dead_code)]

use crate::common::{must, wait_for, BgProc, Netns, PYTHON};
use std::time::Duration;

/// A target: HTTP/1.1 keep-alive, answers "<name> <peer ip>:<peer port>".
pub const NAMED_HTTP: &str = r#"
import sys, http.server
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("%s %s:%d" % (name, self.client_address[0], self.client_address[1])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer((ip, port), H)
print("listening", flush=True)
s.serve_forever()
"#;

/// One keep-alive connection, a request every 200 ms for argv[2] seconds; per response
/// "r <epoch ms> <local port> <body>". Never reconnects: an error ends it ("error ...").
pub const KEEPALIVE_CLIENT: &str = r#"
import http.client, sys, time
vip, secs = sys.argv[1], float(sys.argv[2])
c = http.client.HTTPConnection(vip, 80, timeout=15)
c.auto_open = 0
c.connect()
port = c.sock.getsockname()[1]
end = time.time() + secs
print("connected %d" % port, flush=True)
try:
    while time.time() < end:
        c.request("GET", "/")
        body = c.getresponse().read().decode()
        print("r %d %d %s" % (int(time.time() * 1000), c.sock.getsockname()[1], body), flush=True)
        time.sleep(0.2)
    print("done", flush=True)
except Exception as e:
    print("error %r" % e, flush=True)
"#;

/// Runs `python3 -u -c script args` in `ns`, output to `log`.
pub fn py(ns: &Netns, script: &str, args: &[&str], log: &std::path::Path) -> BgProc {
    let mut a = vec![PYTHON, "-u", "-c", script];
    a.extend_from_slice(args);
    ns.spawn(&a, log)
}

/// `p`'s log contains `needle` within `secs` seconds.
pub fn wait_log(p: &BgProc, needle: &str, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        p.log_text().contains(needle).then_some(())
    })
    .is_some()
}

/// The peer (public ip:port) of the server's established connection on :8080.
pub fn server_peer(server: &Netns) -> Option<String> {
    let o = server.exec(&["ss", "-Htn", "( sport = :8080 )"], 5);
    o.stdout
        .lines()
        .find(|l| l.starts_with("ESTAB"))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(str::to_string)
}

/// TCP resets this namespace's kernel sent or saw on established connections.
pub fn resets(ns: &Netns) -> (i64, i64) {
    let o = ns.exec(&["nstat", "-az", "TcpOutRsts", "TcpEstabResets"], 5);
    let get = |name: &str| {
        o.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    (get("TcpOutRsts"), get("TcpEstabResets"))
}

/// sha256 of a file, hex.
pub fn sha256(path: &std::path::Path) -> String {
    let o = must(&["sha256sum", path.to_str().expect("path")], 30);
    o.stdout.split_whitespace().next().unwrap_or("").to_string()
}
