//! Control-side daemons report their state as a Prometheus text file (node-exporter's
//! textfile-collector convention), rewritten atomically after every sync, plus log lines.
use std::path::Path;

/// Writes `text` to `path` atomically (temp file + rename), so readers never see half a file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Gauges of a fleet daemon, rendered in the Prometheus text format.
pub fn render(daemon: &str, id: &str, gauges: &[(&str, &str, f64)]) -> String {
    let mut s = String::new();
    for (name, help, v) in gauges {
        s += &format!(
            "# HELP flowgate_fleet_{name} {help}\n# TYPE flowgate_fleet_{name} gauge\n\
             flowgate_fleet_{name}{{daemon=\"{daemon}\",id=\"{id}\"}} {v}\n"
        );
    }
    s
}

/// Seconds since the Unix epoch.
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_and_writes() {
        let s = super::render(
            "node-agent",
            "n1",
            &[("etcd_up", "1 when etcd answered the last sync", 0.0)],
        );
        assert!(
            s.contains("flowgate_fleet_etcd_up{daemon=\"node-agent\",id=\"n1\"} 0\n"),
            "{s}"
        );
        let p = std::env::temp_dir().join(format!("fg-status-{}.prom", std::process::id()));
        super::write_atomic(&p, &s).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), s);
        std::fs::remove_file(&p).unwrap();
    }
}
