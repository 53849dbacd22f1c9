//! `flowgate ctl`: everyday questions to a running appliance over its HTTP server
//! (`metrics.listen`): readiness, counters, ports, NAT gateways, load-balancer targets.
//! Everything it shows comes from what the control side publishes; nothing stops a worker.
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct CtlArgs {
    /// The appliance's HTTP address (host:port). Default: `metrics.listen` of --config.
    #[arg(short, long, global = true)]
    pub addr: Option<String>,
    /// Config file to take `metrics.listen` from.
    #[arg(
        short,
        long,
        global = true,
        default_value = "/etc/flowgate/flowgate.yaml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(Subcommand)]
pub enum CtlCmd {
    /// Readiness (/healthz): prints the reason; exit status 0 when ready, 1 when not.
    Health,
    /// Totals, per-worker and per-port counters, non-zero drop reasons.
    Stats,
    /// Ports: id, link, packets and bytes each way, misses.
    Ports,
    /// NAT gateways: active connections and counters, flows per worker.
    Nat,
    /// Load-balancer targets: state and active flows.
    Targets,
    /// Which inside host:port held PUBLIC_IP:PORT (and toward which destination, for which
    /// tenant), from the translation log: at --at TIME, else now or most recently.
    /// Exit status 1 when nobody did.
    Who {
        /// The public endpoint, e.g. 198.51.100.1:1024.
        public: String,
        /// UTC time: 2026-11-27T23:01:02Z, "2026-11-27 23:01:02" or unix seconds.
        #[arg(long)]
        at: Option<String>,
        /// The translation log. Default: `translation_log.path` of --config.
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

/// The address to ask: --addr, else the config's `metrics.listen` (0.0.0.0 -> 127.0.0.1).
fn address(a: &CtlArgs) -> Result<SocketAddr, String> {
    if let Some(s) = &a.addr {
        return s
            .to_socket_addrs()
            .map_err(|e| format!("{s}: {e}"))?
            .next()
            .ok_or_else(|| format!("{s}: no address"));
    }
    let cfg = crate::config::load(&a.config).map_err(|e| e.to_string())?;
    let mut addr = cfg.metrics.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

/// `GET path` (HTTP/1.0, the server closes): (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(t)).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: bad status line"))?;
    Ok((code, body.to_string()))
}

fn get_json(addr: SocketAddr, path: &str) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let (code, body) = get(addr, path)?;
    if code != 200 {
        return Err(format!("{path}: HTTP {code}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{path}: {e}"))
}

fn show(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Key/value lines, keys aligned.
fn print_dict(d: &BTreeMap<String, serde_json::Value>) {
    let w = d.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in d {
        println!("{k:<w$}  {}", show(v));
    }
}

/// `port/NAME/FIELD` keys as a table, one row per port.
pub fn ports_table(d: &BTreeMap<String, serde_json::Value>) -> String {
    let cols = [
        "id",
        "link_up",
        "rx_packets",
        "tx_packets",
        "rx_bytes",
        "tx_bytes",
        "rx_missed",
        "rx_nombuf",
    ];
    let mut rows: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for (k, v) in d {
        let mut it = k.splitn(3, '/');
        if let (Some("port"), Some(name), Some(field)) = (it.next(), it.next(), it.next()) {
            rows.entry(name).or_default().insert(field, show(v));
        }
    }
    let mut out = format!("{:<12}", "port");
    for c in cols {
        out += &format!(" {c:>12}");
    }
    out.push('\n');
    for (name, f) in &rows {
        out += &format!("{name:<12}");
        for c in cols {
            let v = f.get(c).map(String::as_str).unwrap_or("-");
            let v = match (c, v) {
                ("link_up", "1") => "up",
                ("link_up", "0") => "down",
                _ => v,
            };
            out += &format!(" {v:>12}");
        }
        out.push('\n');
    }
    out
}

/// Runs a `flowgate ctl` command; the exit status (0 ok, 1 not ready or error).
pub fn run(a: &CtlArgs) -> i32 {
    match run_inner(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowgate ctl: {e}");
            1
        }
    }
}

fn run_inner(a: &CtlArgs) -> Result<i32, String> {
    if let CtlCmd::Who { public, at, log } = &a.cmd {
        return who(a, public, at.as_deref(), log.as_deref());
    }
    let addr = address(a)?;
    match a.cmd {
        CtlCmd::Health => {
            let (code, body) = get(addr, "/healthz")?;
            println!("{}", body.trim());
            Ok(if code == 200 { 0 } else { 1 })
        }
        CtlCmd::Stats => {
            print_dict(&get_json(addr, "/api/stats")?);
            Ok(0)
        }
        CtlCmd::Ports => {
            print!("{}", ports_table(&get_json(addr, "/api/stats")?));
            Ok(0)
        }
        CtlCmd::Nat => {
            print_dict(&get_json(addr, "/api/nat/flows")?);
            Ok(0)
        }
        CtlCmd::Targets => {
            let d = get_json(addr, "/api/lb/targets")?;
            if d.get("targets").and_then(|v| v.as_u64()) == Some(0) {
                println!("no load-balancer targets");
            } else {
                print_dict(&d);
            }
            Ok(0)
        }
        CtlCmd::Who { .. } => Ok(1),
    }
}

/// `ctl who`: reads the log itself (works when the appliance is down, or on a copy).
fn who(
    a: &CtlArgs,
    public: &str,
    at: Option<&str>,
    log: Option<&std::path::Path>,
) -> Result<i32, String> {
    use crate::flowlog::{time, who};
    let ep: std::net::SocketAddrV4 = public
        .parse()
        .map_err(|_| format!("`{public}`: expected PUBLIC_IP:PORT"))?;
    let path = match log {
        Some(p) => p.to_path_buf(),
        None => crate::config::load(&a.config)
            .map_err(|e| e.to_string())?
            .translation_log
            .map(|t| t.path)
            .ok_or("no --log and the config has no translation_log")?,
    };
    let at = at.map(time::parse_utc_ms).transpose()?;
    let public = ep.to_string();
    let found = who::who(&who::holders(&who::read_log(&path)?, &public), at);
    if found.is_empty() {
        match at {
            Some(t) => println!("{public}: none at {}", time::rfc3339_ms(t)),
            None => println!("{public}: none"),
        }
        return Ok(1);
    }
    for h in &found {
        println!("{}", h.describe(&public));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_table_has_a_row_per_port() {
        let d: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"port/inside/id":0,"port/inside/link_up":1,"port/inside/rx_packets":5,
                "port/outside/id":1,"port/outside/link_up":0,"workers":1}"#,
        )
        .unwrap();
        let t = ports_table(&d);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("inside") && lines[1].contains(" up "),
            "{t}"
        );
        assert!(
            lines[2].starts_with("outside") && lines[2].contains("down"),
            "{t}"
        );
    }
}
