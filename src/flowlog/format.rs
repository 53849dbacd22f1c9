//! Text of the logs. Flow logs: the VPC Flow Logs default format, version 2
//! (`version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes
//! start end action log-status`, space separated, `-` where a field has no value).
//! Translation log: one JSON object per line.

use super::time::rfc3339_ms;
use super::Endpoint;

/// The header line AWS writes at the top of a flow-log file.
pub const V2_HEADER: &str =
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";

/// One traffic record (`action`: ACCEPT or REJECT; log-status OK).
#[allow(clippy::too_many_arguments)]
pub fn v2_traffic(
    account: &str,
    iface: &str,
    proto: u8,
    src: Endpoint,
    dst: Endpoint,
    packets: u64,
    bytes: u64,
    start: u32,
    end: u32,
    accept: bool,
) -> String {
    // ICMP has no ports: AWS writes 0 (the echo identifier is not a port).
    let (sp, dp) = if proto == 1 {
        (0, 0)
    } else {
        (src.port, dst.port)
    };
    format!(
        "2 {account} {iface} {} {} {sp} {dp} {proto} {packets} {bytes} {start} {end} {} OK",
        src.addr(),
        dst.addr(),
        if accept { "ACCEPT" } else { "REJECT" }
    )
}

/// A record with no traffic fields: `NODATA` (nothing in the interval) or `SKIPDATA`
/// (records were lost).
pub fn v2_status(account: &str, iface: &str, start: u32, end: u32, status: &str) -> String {
    format!("2 {account} {iface} - - - - - - - {start} {end} - {status}")
}

pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        p => p.to_string(),
    }
}

/// A translation-log line (RFC 6888 §4: protocol, inside and public endpoints, the
/// destination, time).
pub fn mapping_line(
    t_ms: u64,
    created: bool,
    tenant: &str,
    proto: u8,
    inside: Endpoint,
    public: Endpoint,
    remote: Endpoint,
) -> String {
    serde_json::json!({
        "ts": rfc3339_ms(t_ms),
        "ts_ms": t_ms,
        "event": if created { "created" } else { "deleted" },
        "tenant": tenant,
        "proto": proto_name(proto),
        "inside": inside.to_string(),
        "public": public.to_string(),
        "destination": remote.to_string(),
    })
    .to_string()
}

/// A translation-log line saying events were lost (ring full) up to `t_ms`.
pub fn lost_line(t_ms: u64, lost: u64) -> String {
    serde_json::json!({"ts": rfc3339_ms(t_ms), "ts_ms": t_ms, "event": "lost", "count": lost})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_lines_have_fourteen_fields() {
        let l = v2_traffic(
            "123",
            "nat-a",
            17,
            Endpoint::new(0x0a00_0102, 5555),
            Endpoint::new(0xc633_6402, 9000),
            3,
            300,
            1_700_000_000,
            1_700_000_002,
            true,
        );
        assert_eq!(
            l,
            "2 123 nat-a 10.0.1.2 198.51.100.2 5555 9000 17 3 300 1700000000 1700000002 ACCEPT OK"
        );
        assert_eq!(l.split(' ').count(), V2_HEADER.split(' ').count());
        let n = v2_status("-", "nat-a", 1, 2, "NODATA");
        assert_eq!(n, "2 - nat-a - - - - - - - 1 2 - NODATA");
        assert_eq!(n.split(' ').count(), 14);
    }

    #[test]
    fn mapping_lines_are_json() {
        let l = mapping_line(
            1_000,
            true,
            "nat-a",
            6,
            Endpoint::new(0x0a00_0102, 40000),
            Endpoint::new(0xc633_6401, 1024),
            Endpoint::new(0xc633_6402, 80),
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "created");
        assert_eq!(v["public"], "198.51.100.1:1024");
        assert_eq!(v["inside"], "10.0.1.2:40000");
        assert_eq!(v["destination"], "198.51.100.2:80");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["ts"], "1970-01-01T00:00:01.000Z");
    }
}
