//! The control HTTP server (`metrics.listen`): `/metrics` (Prometheus text from
//! `metrics::render`), `/healthz` (readiness, 200 or 503 with the reason) and the read-only
//! `/api/*` answers `flowgate ctl` asks for.
//!
//! `tiny_http` reads each connection on its own pooled thread and hands complete requests to
//! a few handler threads here, so a slow or idle client never stalls a scrape (the old
//! hand-rolled server answered one client at a time).

use crate::config::{Config, PortRole};
use crate::health::Health;
use crate::metrics::{self, Telemetry};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, Server};

/// Handler threads: scrapes render concurrently, one slow reader holds at most one.
const HANDLERS: usize = 4;

/// An answer: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// What the handlers read.
pub struct State {
    pub telemetry: Arc<Telemetry>,
    pub health: Arc<Health>,
}

/// Serves on `addr` until the process is asked to stop. Binding errors are returned (the
/// caller refuses to run without its metrics endpoint).
pub fn serve(
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    cfg: &Config,
) -> std::io::Result<Arc<State>> {
    let server = Server::http(addr)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrInUse, e.to_string()))?;
    let required: Vec<usize> = cfg
        .ports
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == PortRole::Data)
        .map(|(i, _)| i)
        .collect();
    let state = Arc::new(State {
        health: Health::start(telemetry.clone(), required),
        telemetry,
    });
    let server = Arc::new(server);
    for i in 0..HANDLERS {
        let (server, state) = (server.clone(), state.clone());
        std::thread::Builder::new()
            .name(format!("fg-http{i}"))
            .spawn(move || {
                while !crate::pmd::signal::finished() {
                    match server.recv_timeout(Duration::from_millis(500)) {
                        Ok(Some(req)) => answer(req, &state),
                        Ok(None) => {}
                        Err(e) => {
                            crate::warn!("http: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
    }
    Ok(state)
}

fn answer(req: Request, state: &State) {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let reply = if matches!(req.method(), Method::Get | Method::Head) {
        route(path, query, state)
    } else {
        Reply::text(405, "only GET\n")
    };
    let ctype = Header::from_bytes("Content-Type", reply.content_type).expect("static header");
    let resp = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(ctype);
    // A client that went away is its own problem; nothing to log per request.
    let _ = req.respond(resp);
}

fn json(d: crate::pmd::telemetry::Dict) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json",
        body: crate::telemetry::to_json(&d) + "\n",
    }
}

/// The routing table (plain function: unit-testable without sockets).
pub fn route(path: &str, query: &str, state: &State) -> Reply {
    let _ = query;
    match path {
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(&state.telemetry),
        },
        "/healthz" | "/readyz" => match state.health.check() {
            Ok(s) => Reply::text(200, format!("{s}\n")),
            Err(why) => Reply::text(503, format!("not ready: {why}\n")),
        },
        "/livez" => Reply::text(200, "alive\n"),
        "/api/stats" => json(crate::telemetry::stats(&state.telemetry)),
        "/api/nat/flows" => json(crate::telemetry::nat_flows(&state.telemetry)),
        "/api/lb/targets" => json(crate::telemetry::lb_targets(&state.telemetry)),
        "/" => Reply::text(
            200,
            "flowgate: /metrics (Prometheus), /healthz (readiness), /livez, \
             /api/stats, /api/nat/flows, /api/lb/targets (JSON)\n",
        ),
        _ => Reply::text(404, "not found\n"),
    }
}
