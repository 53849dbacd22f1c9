//! `flowgate ctl who PUBLIC_IP:PORT [--at TIME]`: which inside endpoint held a public
//! endpoint at a time, from the translation log (and its rotated files, oldest first).
//! A full-NAT load balancer's address and port (`lb_address` of its `"kind":"lb"`
//! events) is answered the same way: with the client it carried.

use super::rotate::rotated;
use super::time::rfc3339_ms;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
struct Line {
    ts_ms: u64,
    event: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    proto: String,
    #[serde(default)]
    inside: String,
    #[serde(default)]
    public: String,
    #[serde(default)]
    destination: String,
    /// Load-balancer events (`"kind":"lb"`).
    #[serde(default)]
    kind: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    vip: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    lb_address: String,
}

impl Line {
    /// A load-balancer event read as a mapping: the client inside, the LB address public,
    /// the target as destination (the VIP kept aside).
    fn normalized(mut self) -> Line {
        if self.kind == "lb" {
            self.inside = std::mem::take(&mut self.client);
            self.public = std::mem::take(&mut self.lb_address);
            self.destination = std::mem::take(&mut self.target);
        }
        self
    }
}

/// One mapping of the public endpoint: from `created` until `deleted` (None: still held
/// when the log ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub tenant: String,
    pub proto: String,
    pub inside: String,
    pub destination: String,
    pub created: u64,
    pub deleted: Option<u64>,
    /// A load-balancer flow: the VIP:port the client spoke to (`destination` is then the
    /// target, `inside` the client).
    pub lb_vip: Option<String>,
}

impl Holder {
    pub fn describe(&self, public: &str) -> String {
        if let Some(vip) = &self.lb_vip {
            return format!(
                "{public} held by {} (load-balancer flow, full NAT: {} to VIP {vip}, target {}, load balancer {}) from {} until {}",
                self.inside,
                self.proto,
                self.destination,
                self.tenant,
                rfc3339_ms(self.created),
                self.deleted.map_or("now".into(), rfc3339_ms)
            );
        }
        format!(
            "{public} held by {} ({} to {}, tenant {}) from {} until {}",
            self.inside,
            self.proto,
            self.destination,
            self.tenant,
            rfc3339_ms(self.created),
            self.deleted.map_or("now".into(), rfc3339_ms)
        )
    }
}

/// Every mapping of `public` in the log text, in creation order.
pub fn holders(text: &str, public: &str) -> Vec<Holder> {
    let mut out: Vec<Holder> = Vec::new();
    for l in text.lines() {
        let Ok(l) = serde_json::from_str::<Line>(l).map(Line::normalized) else {
            continue;
        };
        if l.public != public {
            continue;
        }
        match l.event.as_str() {
            "created" => out.push(Holder {
                tenant: l.tenant,
                proto: l.proto,
                inside: l.inside,
                destination: l.destination,
                created: l.ts_ms,
                deleted: None,
                lb_vip: (l.kind == "lb").then_some(l.vip),
            }),
            "deleted" => {
                if let Some(h) = out.iter_mut().rev().find(|h| {
                    h.deleted.is_none()
                        && h.inside == l.inside
                        && h.destination == l.destination
                        && h.proto == l.proto
                        && h.tenant == l.tenant
                        && h.lb_vip.is_some() == (l.kind == "lb")
                }) {
                    h.deleted = Some(l.ts_ms);
                }
            }
            _ => {}
        }
    }
    out
}

/// The holders at `at` (unix ms); without `at`: those holding it now, else the most recent.
pub fn who(all: &[Holder], at: Option<u64>) -> Vec<Holder> {
    match at {
        Some(t) => all
            .iter()
            .filter(|h| h.created <= t && h.deleted.is_none_or(|d| d >= t))
            .cloned()
            .collect(),
        None => {
            let open: Vec<Holder> = all
                .iter()
                .filter(|h| h.deleted.is_none())
                .cloned()
                .collect();
            if open.is_empty() {
                all.last().cloned().into_iter().collect()
            } else {
                open
            }
        }
    }
}

/// The log and its rotated files, oldest first, concatenated.
pub fn read_log(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    for n in (1..=1000).rev() {
        if let Ok(t) = std::fs::read_to_string(rotated(path, n)) {
            text += &t;
        }
    }
    text += &std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"ts_ms":1000,"event":"created","tenant":"g","proto":"udp","inside":"10.0.1.2:5000","public":"198.51.100.1:1024","destination":"198.51.100.9:53"}
{"ts_ms":2000,"event":"deleted","tenant":"g","proto":"udp","inside":"10.0.1.2:5000","public":"198.51.100.1:1024","destination":"198.51.100.9:53"}
not json
{"ts_ms":3000,"event":"created","tenant":"g","proto":"tcp","inside":"10.0.1.3:6000","public":"198.51.100.1:1024","destination":"198.51.100.9:80"}
{"ts_ms":3500,"event":"created","tenant":"g","proto":"tcp","inside":"10.0.1.4:7000","public":"198.51.100.1:1025","destination":"198.51.100.9:80"}
"#;

    #[test]
    fn answers_by_time() {
        let h = holders(LOG, "198.51.100.1:1024");
        assert_eq!(h.len(), 2);
        assert_eq!(who(&h, Some(1500))[0].inside, "10.0.1.2:5000");
        assert!(who(&h, Some(500)).is_empty(), "before any mapping");
        assert!(who(&h, Some(2500)).is_empty(), "between mappings");
        assert_eq!(who(&h, Some(9000))[0].inside, "10.0.1.3:6000");
        assert_eq!(who(&h, None)[0].inside, "10.0.1.3:6000");
        let d = who(&h, Some(1500))[0].describe("198.51.100.1:1024");
        assert!(d.contains("until 1970-01-01T00:00:02.000Z"), "{d}");
    }

    #[test]
    fn answers_for_a_full_nat_lb_address() {
        let log = r#"{"ts_ms":1000,"event":"created","kind":"lb","tenant":"web","proto":"udp","client":"203.0.113.2:40000","vip":"198.51.100.10:53","target":"10.1.0.15:5353","lb_address":"10.1.0.100:1024"}
{"ts_ms":1500,"event":"created","kind":"lb","tenant":"web","proto":"tcp","client":"203.0.113.2:40001","vip":"198.51.100.10:80","target":"10.1.0.11:8080"}
{"ts_ms":2000,"event":"deleted","kind":"lb","tenant":"web","proto":"udp","client":"203.0.113.2:40000","vip":"198.51.100.10:53","target":"10.1.0.15:5353","lb_address":"10.1.0.100:1024"}
"#;
        let h = holders(log, "10.1.0.100:1024");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!((h[0].created, h[0].deleted), (1000, Some(2000)));
        let d = who(&h, Some(1500))[0].describe("10.1.0.100:1024");
        assert!(
            d.starts_with("10.1.0.100:1024 held by 203.0.113.2:40000 (load-balancer flow")
                && d.contains("VIP 198.51.100.10:53, target 10.1.0.15:5353, load balancer web"),
            "{d}"
        );
        // DNAT flows have no LB address: nothing to find for the client's own endpoint.
        assert!(holders(log, "203.0.113.2:40001").is_empty());
    }
}
