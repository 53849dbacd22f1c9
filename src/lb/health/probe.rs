//! One health probe through the kernel's TCP stack.
//!
//! The socket is a `socket2` socket so it can be bound to a source address of the appliance
//! and to a device (`SO_BINDTODEVICE`, e.g. the exception tap) before connecting — no
//! `unsafe` here. The HTTP GET is written by hand on that socket: the maintained clients
//! (`ureq` 2) cannot bind a source address or a device, and a health check needs only the
//! status line of one `Connection: close` request.

use super::{HealthSpec, ProbeProtocol};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

/// Where probes leave from. Both `None`: the kernel picks by its routing table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Source address (an address of the appliance the targets can answer to).
    pub source_ip: Option<Ipv4Addr>,
    /// Interface the socket is bound to (`SO_BINDTODEVICE`; needs CAP_NET_RAW).
    pub bind_device: Option<String>,
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Ok,
    /// RST to the SYN.
    Refused,
    /// No answer (or no complete status line) within the timeout.
    Timeout,
    /// HTTP status outside the matcher.
    Status(u16),
    /// Not an HTTP status line, or the connection closed before one.
    BadResponse,
    /// Connected, then reset before a status line.
    Reset,
    /// Any other socket error (unreachable, bind failure, ...).
    Error(String),
}

impl ProbeOutcome {
    pub fn is_ok(&self) -> bool {
        *self == ProbeOutcome::Ok
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Ok => f.write_str("ok"),
            ProbeOutcome::Refused => f.write_str("connection refused"),
            ProbeOutcome::Timeout => f.write_str("timeout"),
            ProbeOutcome::Status(s) => write!(f, "HTTP status {s} outside the matcher"),
            ProbeOutcome::BadResponse => f.write_str("no HTTP status line"),
            ProbeOutcome::Reset => f.write_str("connection reset"),
            ProbeOutcome::Error(e) => f.write_str(e),
        }
    }
}

/// Probes `ip`, on `spec.port` or else `traffic_port`, within `spec.timeout`.
pub fn probe(
    opts: &ProbeOptions,
    ip: Ipv4Addr,
    traffic_port: u16,
    spec: &HealthSpec,
) -> ProbeOutcome {
    let port = spec.port.unwrap_or(traffic_port);
    // The config checks the path; a space or line break here would forge the request.
    let bad_path =
        !spec.path.starts_with('/') || spec.path.bytes().any(|b| b.is_ascii_whitespace());
    if spec.protocol == ProbeProtocol::Http && bad_path {
        return ProbeOutcome::Error(format!("bad HTTP path {:?}", spec.path));
    }
    let deadline = Instant::now() + spec.timeout;
    let stream = match connect(opts, SocketAddrV4::new(ip, port), spec.timeout) {
        Ok(s) => s,
        Err(o) => return o,
    };
    match spec.protocol {
        ProbeProtocol::Tcp => ProbeOutcome::Ok,
        ProbeProtocol::Http => http_get(stream, ip, port, spec, deadline),
    }
}

fn connect(
    opts: &ProbeOptions,
    to: SocketAddrV4,
    timeout: Duration,
) -> Result<TcpStream, ProbeOutcome> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(other)?;
    if let Some(dev) = &opts.bind_device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| ProbeOutcome::Error(format!("bind to device {dev}: {e}")))?;
    }
    if let Some(src) = opts.source_ip {
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
            .map_err(|e| ProbeOutcome::Error(format!("bind to {src}: {e}")))?;
    }
    s.connect_timeout(&SockAddr::from(to), timeout)
        .map_err(classify)?;
    Ok(s.into())
}

/// `GET path` with `Connection: close`; reads until the status line is complete.
fn http_get(
    mut s: TcpStream,
    ip: Ipv4Addr,
    port: u16,
    spec: &HealthSpec,
    deadline: Instant,
) -> ProbeOutcome {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: flowgate-health-check\r\n\
         Connection: close\r\n\r\n",
        spec.path
    );
    let Some(left) = remaining(deadline) else {
        return ProbeOutcome::Timeout;
    };
    if let Err(e) = s
        .set_write_timeout(Some(left))
        .and_then(|_| s.write_all(req.as_bytes()))
    {
        return classify(e);
    }
    let mut buf = [0u8; 512];
    let mut len = 0;
    while !buf[..len].windows(2).any(|w| w == b"\r\n") && len < buf.len() {
        let Some(left) = remaining(deadline) else {
            return ProbeOutcome::Timeout;
        };
        if let Err(e) = s.set_read_timeout(Some(left)) {
            return classify(e);
        }
        match s.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return classify(e),
        }
    }
    match parse_status(&buf[..len]) {
        Some(code) if (spec.matcher.0..=spec.matcher.1).contains(&code) => ProbeOutcome::Ok,
        Some(code) => ProbeOutcome::Status(code),
        None => ProbeOutcome::BadResponse,
    }
}

/// The code of an `HTTP/1.x NNN ...` status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

fn classify(e: io::Error) -> ProbeOutcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeOutcome::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeOutcome::Timeout,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => ProbeOutcome::Reset,
        _ => other(e),
    }
}

fn other(e: io::Error) -> ProbeOutcome {
    ProbeOutcome::Error(e.to_string())
}
