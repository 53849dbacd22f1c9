//! Operating flowgate: the control HTTP server under slow clients, readiness that follows
//! port links, and (further down) the deployment kit and DPDK's own tools against the
//! running appliance.

mod common;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use nat_topology::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `GET path` (HTTP/1.1, Connection: close): status code and body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(t)).ok();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no headers: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad status line: {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `/healthz` answers `want`; returns the last (status, body).
fn healthz_until(addr: SocketAddr, want: u16, secs: u64) -> (u16, String) {
    let t0 = Instant::now();
    loop {
        let r = http_get(addr, "/healthz").unwrap_or((0, String::new()));
        if r.0 == want || t0.elapsed() > Duration::from_secs(secs) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Clients that connect and send half a request, send nothing, or ask and never read do
/// not delay other scrapes; eight scrapes at once all succeed.
#[test]
fn http_slow_clients_do_not_stall_scrapes() {
    let Some(_g) = setup("http_slow_clients_do_not_stall_scrapes") else {
        return;
    };
    let rig = Rig::standard("ophttp", 1500, &RouterOpts::default());
    let addr = rig.app.metrics_addr;
    let mut slow = Vec::new();
    for i in 0..6 {
        let mut s = TcpStream::connect(addr).unwrap();
        match i % 3 {
            0 => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap(),
            1 => {}
            _ => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap(),
        }
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let t0 = Instant::now();
        let (code, body) = http_get(addr, "/metrics").expect("scrape while slow clients wait");
        assert_eq!(code, 200);
        assert!(body.contains("flowgate_port_rx_packets_total"), "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "scrape took {:?} with slow clients connected",
            t0.elapsed()
        );
    }
    let scrapers: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(addr, "/metrics")))
        .collect();
    for s in scrapers {
        let (code, body) = s.join().unwrap().expect("concurrent scrape");
        assert_eq!(code, 200);
        assert!(body.contains("flowgate_workers 1"), "{body}");
    }
    let (code, body) = healthz_until(addr, 200, 5);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "ok: 2 port(s) up, 1 worker(s) running");
    // The harness's own HTTP/1.0 scraper still works.
    assert!(rig.app.metrics().has("flowgate_build_info"));
    assert_eq!(http_get(addr, "/nope").unwrap().0, 404);
    drop(slow);
    let mut rig = rig;
    assert!(rig.app.stop().success());
}

/// `/healthz` is 200 with both links up and the worker's heartbeat moving, 503 naming the
/// port while its link is down, and 200 again once it is back. net_tap ports left in the
/// root namespace: the tap PMD reports the kernel interface's IFF_UP as its link (the
/// af_packet PMD always says up; a tap moved to another namespace always reads down).
#[test]
fn healthz_follows_links_and_workers() {
    let Some(_g) = setup("healthz_follows_links_and_workers") else {
        return;
    };
    let (t0, t1) = ("ophzt0", "ophzt1");
    delete_link(t0);
    delete_link(t1);
    let yaml = router_yaml(
        &format!("net_tap0,iface={t0}"),
        &format!("net_tap1,iface={t1}"),
        1500,
        &RouterOpts::default(),
    );
    let mut app = Appliance::start(&yaml);
    let addr = app.metrics_addr;
    let (code, body) = healthz_until(addr, 200, 5);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "ok: 2 port(s) up, 1 worker(s) running");

    must(&["ip", "link", "set", t0, "down"], 5);
    let (code, body) = healthz_until(addr, 503, 5);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body.trim(), "not ready: port client: link down");
    assert_eq!(
        app.metrics()
            .value("flowgate_port_link_up", &[("port", "client")]),
        0.0
    );

    must(&["ip", "link", "set", t0, "up"], 5);
    let (code, body) = healthz_until(addr, 200, 5);
    assert_eq!(code, 200, "{body}");
    assert!(app.stop().success());
    let (code, _) = http_get(addr, "/healthz").unwrap_or((0, String::new()));
    assert_eq!(code, 0, "the server is gone after stop");
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) log lines carry `<N>` syslog
/// priorities for journald; elsewhere they read `flowgate LEVEL: ...`. An unknown EAL option
/// makes the run fail right after its first info line, so no root or ports are needed.
#[test]
fn log_lines_carry_syslog_priorities_under_journald() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("opslog");
    let cfg = dir.join("f.yaml");
    std::fs::write(
        &cfg,
        router_yaml("net_null0", "net_null1", 1500, &RouterOpts::default()),
    )
    .unwrap();
    for journal in [true, false] {
        let log = dir.join(&format!("stderr-{journal}"));
        let f = std::fs::File::create(&log).unwrap();
        let m = f.metadata().unwrap();
        let mut cmd = std::process::Command::new(flowgate_bin());
        cmd.args(["run", "-c"])
            .arg(&cfg)
            .args(["--", "--no-such-eal-option"])
            .stdout(std::process::Stdio::null())
            .stderr(f);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let st = cmd.status().unwrap();
        assert!(!st.success());
        let text = std::fs::read_to_string(&log).unwrap();
        let want = if journal {
            "<6>EAL arguments: "
        } else {
            "flowgate info: EAL arguments: "
        };
        assert!(text.lines().any(|l| l.starts_with(want)), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// The EC2 deployment kit (deploy/)
// ---------------------------------------------------------------------------------------------

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// LB metric families the dashboard's NLB panels use. They come with the load balancer
/// (branch lb, src/lb/metrics.rs); a flowgate without a load balancer configured exposes
/// none, so they are checked only when the scrape has some `flowgate_lb_` family.
const LB_FAMILIES: &[&str] = &[
    "flowgate_lb_active_flows",
    "flowgate_lb_new_flows_total",
    "flowgate_lb_bytes_from_client_total",
    "flowgate_lb_bytes_from_target_total",
    "flowgate_lb_healthy_hosts",
    "flowgate_lb_unhealthy_hosts",
    "flowgate_lb_tcp_client_resets_total",
    "flowgate_lb_tcp_target_resets_total",
    "flowgate_lb_tcp_elb_resets_total",
    "flowgate_lb_port_allocation_errors_total",
];

/// `systemd-analyze verify` on both units, with the install paths pointed at this build
/// (verify insists that every Exec* binary exists). It exits 0 even for a unit it only
/// half understood, so any output fails the test; a broken copy proves the check bites.
#[test]
fn systemd_analyze_verifies_the_units() {
    require_tool("systemd-analyze");
    let dir = TempDir::new("opsunit");
    let fix = |text: &str| {
        text.replace("/usr/local/bin/flowgate", flowgate_bin().to_str().unwrap())
            .replace(
                "/usr/local/lib/flowgate/prepare.sh",
                repo("deploy/flowgate-prepare.sh").to_str().unwrap(),
            )
    };
    let verify = |units: &[&str]| -> Out {
        let paths: Vec<String> = units
            .iter()
            .map(|u| dir.join(u).to_string_lossy().into_owned())
            .collect();
        let mut args = vec!["systemd-analyze", "verify"];
        args.extend(paths.iter().map(|s| s.as_str()));
        run(&args, 60)
    };
    for u in ["flowgate.service", "flowgate-prepare.service"] {
        let text = std::fs::read_to_string(repo(&format!("deploy/{u}"))).unwrap();
        std::fs::write(dir.join(u), fix(&text)).unwrap();
    }
    let o = verify(&["flowgate.service", "flowgate-prepare.service"]);
    assert!(o.ok() && o.all().trim().is_empty(), "{o}");

    let unit = std::fs::read_to_string(dir.join("flowgate.service")).unwrap();
    for want in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "LimitMEMLOCK=infinity",
        "TimeoutStopSec=",
        "Requires=dev-hugepages.mount",
    ] {
        assert!(unit.contains(want), "flowgate.service lacks {want}");
    }
    std::fs::write(
        dir.join("flowgate.service"),
        unit.replace("Type=exec", "Type=bogus"),
    )
    .unwrap();
    let o = verify(&["flowgate.service"]);
    assert!(
        o.all().contains("bogus"),
        "verify missed a broken unit: {o}"
    );
    assert!(run(
        &[
            "bash",
            "-n",
            repo("deploy/flowgate-prepare.sh").to_str().unwrap()
        ],
        10
    )
    .ok());
}

/// The flowgate config inside the cloud-init user data passes `flowgate check-config`.
#[test]
fn user_data_config_is_valid() {
    let text = std::fs::read_to_string(repo("deploy/user-data.yaml")).unwrap();
    assert!(text.starts_with("#cloud-config\n"));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let files = doc["write_files"].as_sequence().expect("write_files");
    let cfg = files
        .iter()
        .find(|f| f["path"].as_str() == Some("/etc/flowgate/flowgate.yaml"))
        .and_then(|f| f["content"].as_str())
        .expect("the flowgate config in write_files");
    let dir = TempDir::new("opsud");
    std::fs::write(dir.join("flowgate.yaml"), cfg).unwrap();
    let bin = flowgate_bin();
    let o = run(
        &[
            bin.to_str().unwrap(),
            "check-config",
            "--all",
            dir.join("flowgate.yaml").to_str().unwrap(),
        ],
        10,
    );
    assert!(o.ok(), "{o}");
}

/// Every `flowgate_` name in the panel queries.
fn dashboard_metrics(exprs: &[String]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("flowgate_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/grafana-flowgate.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON parses");
    assert!(d["title"].as_str().is_some_and(|t| t.contains("flowgate")));
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    exprs
}

/// Percent-encoding for a query string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus instant query: the JSON answer.
fn prom_query(addr: SocketAddr, q: &str) -> serde_json::Value {
    let (code, body) = http_get(addr, &format!("/api/v1/query?query={}", urlencode(q)))
        .unwrap_or_else(|e| panic!("query {q}: {e}"));
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{code} {q}: {e}: {body}"));
    assert_eq!(v["status"], "success", "{q}: {body}");
    v
}

/// The dashboard JSON parses and every metric it draws exists in a running NAT gateway's
/// /metrics; a real Prometheus with deploy/prometheus.yml's job (pointed at the appliance)
/// and the alert rules scrapes flowgate, its HTTP API returns the NAT connection counter the
/// test caused, and every dashboard query is valid PromQL against it.
#[test]
fn dashboard_metrics_exist_and_prometheus_scrapes() {
    let Some(_g) = setup("dashboard_metrics_exist_and_prometheus_scrapes") else {
        return;
    };
    require_tool("prometheus");
    require_tool("promtool");
    let o = run(
        &[
            "promtool",
            "check",
            "config",
            repo("deploy/prometheus.yml").to_str().unwrap(),
        ],
        30,
    );
    assert!(o.ok(), "{o}");

    let rig = NatRig::start("opsdash", &NatOpts::default());
    let o = ping(rig.a(), SERVER, 3, &[]);
    assert_eq!(ping_counts(&o.stdout), Some((3, 3)), "{o}");
    let m = rig.app.metrics();
    let have: std::collections::BTreeSet<&str> =
        m.samples.iter().map(|s| s.name.as_str()).collect();
    let exprs = dashboard_exprs();
    let used = dashboard_metrics(&exprs);
    // The LB stage is always built (live reload may add load balancers); its per-LB
    // series exist only when one is configured.
    let lb_present = m
        .samples
        .iter()
        .any(|s| s.name.starts_with("flowgate_lb_") && s.labels.contains_key("lb"));
    for name in &used {
        if name.starts_with("flowgate_lb_") {
            assert!(
                LB_FAMILIES.contains(&name.as_str()),
                "undocumented LB metric {name}"
            );
            if !lb_present {
                continue;
            }
        }
        assert!(
            have.contains(name.as_str()),
            "dashboard uses {name}, /metrics lacks it"
        );
    }
    assert!(used.len() >= 25, "{used:?}");
    if !lb_present {
        println!(
            "NOTE: no load balancer in this build: LB panels' metrics not checked: {LB_FAMILIES:?}"
        );
    }

    // Prometheus on loopback: the repository's scrape job pointed at this appliance.
    let dir = TempDir::new("opsprom");
    let kit: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("deploy/prometheus.yml")).unwrap())
            .unwrap();
    let mut job = kit["scrape_configs"][0].clone();
    job["static_configs"][0]["targets"][0] = rig.app.metrics_addr.to_string().into();
    job["scrape_interval"] = "1s".into();
    job["scrape_timeout"] = "1s".into();
    let cfg = serde_yaml::to_string(&serde_yaml::Value::from(
        [
            ("global", kit["global"].clone()),
            (
                "rule_files",
                serde_yaml::to_value([repo("deploy/flowgate-alerts.yml")]).unwrap(),
            ),
            ("scrape_configs", serde_yaml::Value::Sequence(vec![job])),
        ]
        .into_iter()
        .map(|(k, v)| (serde_yaml::Value::from(k), v))
        .collect::<serde_yaml::Mapping>(),
    ))
    .unwrap();
    std::fs::write(dir.join("prometheus.yml"), &cfg).unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = std::process::Command::new("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address={web}"));
    let mut prom = BgProc::spawn(cmd, "prometheus", &dir.join("prometheus.log"));

    let q =
        format!("flowgate_nat_connection_attempts_total{{gateway=\"{GW_ID}\",job=\"flowgate\"}}");
    let got = wait_for(Duration::from_secs(30), || {
        let (code, body) = http_get(web, &format!("/api/v1/query?query={}", urlencode(&q))).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let val = v["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (code == 200 && val >= 1.0).then_some(val)
    });
    assert!(
        got.is_some(),
        "Prometheus never returned {q}\nconfig:\n{cfg}\nlog:\n{}",
        prom.log_text()
    );
    // Rules loaded, target up.
    let up = prom_query(web, "up{job=\"flowgate\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let (_, rules) = http_get(web, "/api/v1/rules").unwrap();
    assert!(rules.contains("FlowgateNatPortAllocationErrors"), "{rules}");
    // Every panel query parses and evaluates (Grafana's variables filled in).
    for e in &exprs {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$gateway", ".*")
            .replace("$lb", ".*");
        prom_query(web, &q);
    }
    prom.stop_with(libc::SIGTERM, Duration::from_secs(10));
    drop(rig);
}

// ---------------------------------------------------------------------------------------------
// DPDK's own tools against the running appliance
// ---------------------------------------------------------------------------------------------

/// Removes the hugepage files a primary with `prefix` left behind (a killed run keeps them).
fn remove_hugepage_files(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir("/dev/hugepages") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// `dpdk-dumpcap` attaches to the running appliance as a secondary process and captures
/// 20 ICMP packets (a BPF capture filter, run by the primary) on the client port while the
/// client pings the server every 20 ms; no echo is lost, the capture holds only ICMP.
#[test]
fn dumpcap_captures_on_a_live_port_without_loss() {
    let Some(_g) = setup("dumpcap_captures_on_a_live_port_without_loss") else {
        return;
    };
    require_tool("dpdk-dumpcap");
    require_tool("tcpdump");
    let topo = Topology::standard("opcap", 1500);
    let mut app = Appliance::start_hugepages(&topo.router_config(&RouterOpts::default()), &[]);
    let prefix = app.file_prefix.clone();
    assert!(ping_until_reply(&topo.client, CLIENT_GW, 5));
    assert!(ping_until_reply(&topo.server, SERVER_GW, 5));
    assert!(
        app.log().contains("packet capture (rte_pdump): ready"),
        "{}",
        app.log()
    );

    let dir = TempDir::new("opcap");
    let mut pinger = topo.client.spawn(
        &[
            "ping", "-n", "-i", "0.02", "-c", "250", "-W", "2", SERVER_IP,
        ],
        &dir.join("ping.log"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pcap = dir.join("client.pcapng");
    let o = run(
        &[
            "dpdk-dumpcap",
            "--file-prefix",
            &prefix,
            "-i",
            "net_af_packet0",
            "-f",
            "icmp",
            "-c",
            "20",
            "-w",
            pcap.to_str().unwrap(),
        ],
        30,
    );
    assert!(o.ok(), "{o}\n{}", app.log());
    let st = pinger.wait_timeout(Duration::from_secs(20));
    assert!(st.is_some(), "ping did not finish");
    let out = pinger.log_text();
    assert_eq!(
        ping_counts(&out),
        Some((250, 250)),
        "echo lost during capture:\n{out}"
    );

    let r = run(&["tcpdump", "-n", "-r", pcap.to_str().unwrap()], 10);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 20, "{r}");
    assert!(lines.iter().all(|l| l.contains(": ICMP echo")), "{r}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("10.0.1.2 > 198.51.100.2: ICMP echo request")),
        "{r}"
    );
    assert!(app.stop().success());
    remove_hugepage_files(&prefix);
}

/// Runs `dpdk-telemetry.py -f PREFIX` with `cmds` on stdin: one JSON reply per command.
fn telemetry(prefix: &str, cmds: &[&str]) -> Vec<serde_json::Value> {
    require_tool("dpdk-telemetry.py");
    let script = format!(
        "printf '{}\\n' | dpdk-telemetry.py -f {prefix}",
        cmds.join("\\n")
    );
    let o = sh(&script, 20);
    assert!(o.ok(), "{o}");
    let replies: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(replies.len(), cmds.len(), "{o}");
    replies
}

/// flowgate's commands on DPDK's telemetry socket answer through `dpdk-telemetry.py`, with
/// the counters of pings the test sent through the NAT gateway; the HTTP `/api/*` twins
/// answer the same.
#[test]
fn telemetry_commands_answer_over_the_dpdk_socket() {
    let Some(_g) = setup("telemetry_commands_answer_over_the_dpdk_socket") else {
        return;
    };
    let rig = NatRig::start("optel", &NatOpts::default());
    let o = ping(rig.a(), SERVER, 3, &[]);
    assert_eq!(ping_counts(&o.stdout), Some((3, 3)), "{o}");
    // Workers publish between bursts; let the echo replies land in the slots.
    rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.value("flowgate_forwarded_packets_total", &[]) >= 6.0
    });
    let r = telemetry(
        &rig.app.file_prefix,
        &[
            "/",
            "/flowgate/stats",
            "/flowgate/nat/flows",
            "/flowgate/lb/targets",
        ],
    );
    let list = r[0]["/"].as_array().expect("command list");
    for c in [
        "/flowgate/stats",
        "/flowgate/nat/flows",
        "/flowgate/lb/targets",
    ] {
        assert!(list.iter().any(|x| x == c), "{c} not registered: {list:?}");
    }
    let s = &r[1]["/flowgate/stats"];
    assert_eq!(s["workers"], 1, "{s}");
    assert!(s["forwarded_packets"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["port/inside/rx_packets"].as_u64().unwrap() >= 3, "{s}");
    assert!(s["port/outside/tx_packets"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["port/inside/link_up"], 1, "{s}");
    assert!(s["worker/0/heartbeat"].as_u64().unwrap() > 0, "{s}");
    let n = &r[2]["/flowgate/nat/flows"];
    assert_eq!(n["gateways"], 1, "{n}");
    assert!(
        n[&format!("gateway/{GW_ID}/connection_attempts")]
            .as_u64()
            .unwrap()
            >= 1,
        "{n}"
    );
    assert!(
        n[&format!("gateway/{GW_ID}/active_connections")]
            .as_u64()
            .unwrap()
            >= 1,
        "{n}"
    );
    assert!(n["worker/0/capacity"].as_u64().unwrap() > 0, "{n}");
    assert_eq!(r[3]["/flowgate/lb/targets"]["targets"], 0);

    let (code, body) = http_get(rig.app.metrics_addr, "/api/nat/flows").unwrap();
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        h[&format!("gateway/{GW_ID}/connection_attempts")],
        n[&format!("gateway/{GW_ID}/connection_attempts")]
    );
    let (_, body) = http_get(rig.app.metrics_addr, "/api/stats").unwrap();
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(h["port/outside/tx_packets"].as_u64().unwrap() >= 3, "{h}");

    // `flowgate ctl` asks the same HTTP server.
    let bin = flowgate_bin();
    let addr = rig.app.metrics_addr.to_string();
    let ctl = |cmd: &str| run(&[bin.to_str().unwrap(), "ctl", "-a", &addr, cmd], 10);
    let o = ctl("health");
    assert!(
        o.ok()
            && o.stdout
                .starts_with("ok: 2 port(s) up, 1 worker(s) running"),
        "{o}"
    );
    let o = ctl("ports");
    assert!(o.ok(), "{o}");
    let inside = o
        .stdout
        .lines()
        .find(|l| l.starts_with("inside"))
        .expect("inside row");
    assert!(inside.split_whitespace().nth(2) == Some("up"), "{o}");
    let o = ctl("nat");
    assert!(
        o.ok()
            && o.stdout
                .contains(&format!("gateway/{GW_ID}/active_connections")),
        "{o}"
    );
    let o = ctl("stats");
    assert!(o.ok() && o.stdout.contains("forwarded_packets"), "{o}");
    assert_eq!(ctl("targets").stdout.trim(), "no load-balancer targets");
    let dead = format!("127.0.0.1:{}", free_port());
    let o = run(&[bin.to_str().unwrap(), "ctl", "-a", &dead, "health"], 10);
    assert!(!o.ok() && o.stderr.contains("flowgate ctl:"), "{o}");
}
