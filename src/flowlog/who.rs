//! `flowgate ctl who PUBLIC_IP:PORT [--at TIME]`: which inside endpoint held a public
//! endpoint at a time, from the translation log (and its rotated files, oldest first).

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
}

impl Holder {
    pub fn describe(&self, public: &str) -> String {
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
        let Ok(l) = serde_json::from_str::<Line>(l) else {
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
            }),
            "deleted" => {
                if let Some(h) = out.iter_mut().rev().find(|h| {
                    h.deleted.is_none()
                        && h.inside == l.inside
                        && h.destination == l.destination
                        && h.proto == l.proto
                        && h.tenant == l.tenant
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
}
