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

/// A translation-log line of a load-balancer flow: the client, the VIP it spoke to, the
/// target chosen and, for full NAT, `lb_address`: the LB address and port the target sees
/// (what `ctl who LB_ADDRESS:PORT` looks up). `"kind":"lb"` tells it from NAT mappings.
#[allow(clippy::too_many_arguments)]
pub fn lb_mapping_line(
    t_ms: u64,
    created: bool,
    tenant: &str,
    proto: u8,
    client: Endpoint,
    vip: Endpoint,
    target: Endpoint,
    snat: Option<Endpoint>,
) -> String {
    let mut v = serde_json::json!({
        "ts": rfc3339_ms(t_ms),
        "ts_ms": t_ms,
        "event": if created { "created" } else { "deleted" },
        "kind": "lb",
        "tenant": tenant,
        "proto": proto_name(proto),
        "client": client.to_string(),
        "vip": vip.to_string(),
        "target": target.to_string(),
    });
    if let (Some(s), Some(o)) = (snat, v.as_object_mut()) {
        o.insert("lb_address".into(), s.to_string().into());
    }
    v.to_string()
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
    fn lb_mapping_lines_name_client_vip_target_and_the_lb_address() {
        let ep = |s: &str| {
            let a: std::net::SocketAddrV4 = s.parse().unwrap();
            Endpoint::new(u32::from(*a.ip()), a.port())
        };
        let (c, v, t) = (
            ep("203.0.113.2:40000"),
            ep("198.51.100.10:53"),
            ep("10.1.0.15:5353"),
        );
        let full = lb_mapping_line(
            2_000,
            false,
            "web",
            17,
            c,
            v,
            t,
            Some(ep("10.1.0.100:1024")),
        );
        let j: serde_json::Value = serde_json::from_str(&full).unwrap();
        assert_eq!(
            (&j["event"], &j["kind"], &j["tenant"], &j["proto"]),
            (
                &"deleted".into(),
                &"lb".into(),
                &"web".into(),
                &"udp".into()
            )
        );
        assert_eq!(j["client"], "203.0.113.2:40000");
        assert_eq!(j["vip"], "198.51.100.10:53");
        assert_eq!(j["target"], "10.1.0.15:5353");
        assert_eq!(j["lb_address"], "10.1.0.100:1024");
        let dnat = lb_mapping_line(2_000, true, "web", 6, c, v, t, None);
        let j: serde_json::Value = serde_json::from_str(&dnat).unwrap();
        assert!(j.get("lb_address").is_none(), "{dnat}");
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
