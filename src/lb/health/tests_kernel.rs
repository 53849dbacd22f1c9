//! Probes and the checker against real kernel servers on loopback: a TCP listener, an HTTP
//! responder whose status the test flips, a silent server, a closed port.
use super::*;
use crossbeam_channel::Receiver;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// What the test server does with a connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Accept and close (a plain TCP service).
    Close,
    /// Read an HTTP request, answer with the current status.
    Http,
    /// Accept and say nothing (until the server stops).
    Silent,
}

struct Server {
    port: u16,
    status: Arc<AtomicU16>,
    /// Request heads and peer addresses seen.
    seen: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(mode: Mode) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sn, sp) = (status.clone(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !sp.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, peer)) => serve(c, peer, mode, &st, &sn, &mut held),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            port,
            status,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::Relaxed);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut c: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    status: &AtomicU16,
    seen: &Mutex<Vec<(String, SocketAddr)>>,
    held: &mut Vec<TcpStream>,
) {
    c.set_nonblocking(false).unwrap();
    match mode {
        Mode::Close => seen.lock().unwrap().push((String::new(), peer)),
        Mode::Silent => held.push(c),
        Mode::Http => {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 256];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(n) if n > 0 => head.extend_from_slice(&b[..n]),
                    _ => return,
                }
            }
            let code = status.load(Ordering::Relaxed);
            let _ = write!(c, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
            seen.lock()
                .unwrap()
                .push((String::from_utf8_lossy(&head).into_owned(), peer));
        }
    }
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spec(protocol: ProbeProtocol, timeout_ms: u64) -> HealthSpec {
    HealthSpec {
        protocol,
        path: "/health".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(timeout_ms),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthSpec::default()
    }
}

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn tcp_probe_connects_and_closed_port_is_refused() {
    let srv = Server::start(Mode::Close);
    let o = ProbeOptions::default();
    let tcp = spec(ProbeProtocol::Tcp, 500);
    assert_eq!(probe::probe(&o, LO, srv.port, &tcp), ProbeOutcome::Ok);
    assert_eq!(
        probe::probe(&o, LO, closed_port(), &tcp),
        ProbeOutcome::Refused
    );
    // The probe port overrides the traffic port.
    let mut other = tcp.clone();
    other.port = Some(srv.port);
    assert_eq!(
        probe::probe(&o, LO, closed_port(), &other),
        ProbeOutcome::Ok
    );
}

#[test]
fn http_probe_checks_status_against_the_matcher() {
    let srv = Server::start(Mode::Http);
    let o = ProbeOptions::default();
    let mut http = spec(ProbeProtocol::Http, 1000);
    assert_eq!(probe::probe(&o, LO, srv.port, &http), ProbeOutcome::Ok);
    srv.set_status(500);
    assert_eq!(
        probe::probe(&o, LO, srv.port, &http),
        ProbeOutcome::Status(500)
    );
    srv.set_status(404);
    assert_eq!(
        probe::probe(&o, LO, srv.port, &http),
        ProbeOutcome::Status(404)
    );
    http.matcher = (200, 499);
    assert_eq!(probe::probe(&o, LO, srv.port, &http), ProbeOutcome::Ok);
    let mut forged = http.clone();
    forged.path = "/ HTTP/1.0\r\nX: y".into();
    assert!(matches!(
        probe::probe(&o, LO, srv.port, &forged),
        ProbeOutcome::Error(e) if e.starts_with("bad HTTP path")
    ));
    let seen = srv.seen.lock().unwrap();
    let head = &seen[0].0;
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", srv.port)),
        "{head}"
    );
    drop(seen);
    // A plain TCP service (closes without reading) is not an HTTP server: reset or no status
    // line, depending on whether its close beats our request.
    let tcp_only = Server::start(Mode::Close);
    let o = probe::probe(&o, LO, tcp_only.port, &http);
    assert!(
        matches!(o, ProbeOutcome::Reset | ProbeOutcome::BadResponse),
        "{o:?}"
    );
}

#[test]
fn http_probe_times_out_on_a_silent_server() {
    let srv = Server::start(Mode::Silent);
    let t = Instant::now();
    let o = probe::probe(
        &ProbeOptions::default(),
        LO,
        srv.port,
        &spec(ProbeProtocol::Http, 200),
    );
    assert_eq!(o, ProbeOutcome::Timeout);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn probe_leaves_from_the_source_address_and_device() {
    let srv = Server::start(Mode::Close);
    let tcp = spec(ProbeProtocol::Tcp, 500);
    let o = ProbeOptions {
        source_ip: Some(Ipv4Addr::new(127, 0, 0, 2)),
        bind_device: Some("lo".into()),
    };
    assert_eq!(probe::probe(&o, LO, srv.port, &tcp), ProbeOutcome::Ok);
    // The handshake completes before the server's accept: wait for it to see the peer.
    let t = Instant::now();
    while srv.seen.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let peer = srv.seen.lock().unwrap()[0].1;
    assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let bad = ProbeOptions {
        source_ip: None,
        bind_device: Some("fgnodev0".into()),
    };
    match probe::probe(&bad, LO, srv.port, &tcp) {
        ProbeOutcome::Error(e) => assert!(e.starts_with("bind to device fgnodev0"), "{e}"),
        o => panic!("{o:?}"),
    }
}

fn target(group: &str, port: u16, spec: &HealthSpec) -> ProbeTarget {
    ProbeTarget {
        key: TargetKey {
            group: group.into(),
            ip: LO,
            port,
        },
        spec: spec.clone(),
    }
}

/// Waits until `log[from..]` holds `port` turning `to` (receiving into `log` as needed);
/// returns the time since `t0`.
fn wait_for(
    rx: &Receiver<Transition>,
    log: &mut Vec<Transition>,
    from: usize,
    port: u16,
    to: HealthState,
    t0: Instant,
) -> Duration {
    let hit = |t: &Transition| t.key.port == port && t.to == to;
    while !log[from..].iter().any(hit) {
        let t = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("port {port} never became {to}; saw {log:?}"));
        log.push(t);
    }
    t0.elapsed()
}

#[test]
fn checker_reports_transitions_within_interval_times_threshold() {
    let http = Server::start(Mode::Http);
    let tcp = Server::start(Mode::Close);
    let closed = closed_port();
    let hs = spec(ProbeProtocol::Http, 100);
    let ts = spec(ProbeProtocol::Tcp, 100);
    // interval x threshold, plus slack for a loaded 2-core test machine.
    let bound = hs.interval * hs.unhealthy_threshold + Duration::from_millis(700);
    let (tx, rx) = crossbeam_channel::unbounded();
    let checker = HealthChecker::start(CheckerOptions::default(), tx).unwrap();
    let t0 = Instant::now();
    checker.update(vec![
        target("web", http.port, &hs),
        target("web", tcp.port, &ts),
        target("web", closed, &ts),
    ]);
    let mut log = Vec::new();
    let mut took = vec![
        wait_for(&rx, &mut log, 0, http.port, HealthState::Healthy, t0),
        wait_for(&rx, &mut log, 0, tcp.port, HealthState::Healthy, t0),
        wait_for(&rx, &mut log, 0, closed, HealthState::Unhealthy, t0),
    ];
    let refused = log.iter().find(|t| t.key.port == closed).unwrap();
    assert_eq!(refused.from, HealthState::Initial);
    assert_eq!(
        refused.reason,
        "2 consecutive failures, last: connection refused"
    );

    http.set_status(500);
    let (n, t1) = (log.len(), Instant::now());
    took.push(wait_for(
        &rx,
        &mut log,
        n,
        http.port,
        HealthState::Unhealthy,
        t1,
    ));
    http.set_status(200);
    let (n, t2) = (log.len(), Instant::now());
    took.push(wait_for(
        &rx,
        &mut log,
        n,
        http.port,
        HealthState::Healthy,
        t2,
    ));
    println!("health transitions took {took:?} (interval 100 ms, thresholds 2)");
    for t in &took[..] {
        assert!(*t <= bound, "{took:?} > {bound:?}");
    }

    // Live update: the closed port leaves, a new target arrives; the others keep state.
    let new = Server::start(Mode::Close);
    let n = log.len();
    checker.update(vec![
        target("web", http.port, &hs),
        target("web", tcp.port, &ts),
        target("api", new.port, &ts),
    ]);
    wait_for(
        &rx,
        &mut log,
        n,
        new.port,
        HealthState::Healthy,
        Instant::now(),
    );
    let states = checker.states();
    assert_eq!(states.len(), 3);
    assert!(
        states.iter().all(|(_, s)| *s == HealthState::Healthy),
        "{states:?}"
    );
    assert!(states.iter().all(|(k, _)| k.port != closed));
    drop(checker);
    log.extend(rx.try_iter());
    // No transition of a kept target since the update.
    assert!(log[n..].iter().all(|t| t.key.port == new.port), "{log:?}");
}
