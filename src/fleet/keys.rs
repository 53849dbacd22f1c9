//! The fleet's layout in etcd (all under `/flowgate/<fleet>/`):
//!
//! | key                          | value                                    | written by       |
//! |------------------------------|------------------------------------------|------------------|
//! | `nodes/<node>`               | the node's fabric address (IPv4), leased | node agent       |
//! | `tenants/<tenant>`           | tenant spec, YAML ([`TenantSpec`])       | operator         |
//! | `placements/<tenant>`        | shard: node ids, comma-separated, sorted | controller       |
//! | `applied/<node>`             | tenants its running flowgate has, leased | node agent       |
//! | `repl/<node>`                | its replication address (ip:port), leased | node agent      |
//! | `suspect/<node>.by.<rep>`    | a peer's flowgate stopped heartbeating    | node agent <rep> |
//! | `election`                   | etcd election of the controllers         | controller       |
//!
//! Values are plain text so `etcdctl get --prefix /flowgate/` is readable.
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Key prefixes of one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    pub root: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Keys {
        Keys {
            root: format!("/flowgate/{fleet}/"),
        }
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }
    pub fn node(&self, id: &str) -> String {
        format!("{}nodes/{id}", self.root)
    }
    pub fn tenants(&self) -> String {
        format!("{}tenants/", self.root)
    }
    pub fn tenant(&self, id: &str) -> String {
        format!("{}tenants/{id}", self.root)
    }
    pub fn placements(&self) -> String {
        format!("{}placements/", self.root)
    }
    pub fn placement(&self, id: &str) -> String {
        format!("{}placements/{id}", self.root)
    }
    /// `applied/<node>`: the tenants the node's running flowgate serves (leased, written by a
    /// supervising node agent); the fabric routes a tenant only to nodes that list it.
    pub fn applied(&self) -> String {
        format!("{}applied/", self.root)
    }
    pub fn applied_node(&self, id: &str) -> String {
        format!("{}applied/{id}", self.root)
    }
    /// `repl/<node>`: the node's replication address (its flowgate's `replication.listen`);
    /// the agents of a shard's nodes make each other replication peers.
    pub fn repls(&self) -> String {
        format!("{}repl/", self.root)
    }
    pub fn repl(&self, id: &str) -> String {
        format!("{}repl/{id}", self.root)
    }
    /// `suspect/<node>.by.<reporter>`: the reporter's flowgate heard nothing from the node's
    /// flowgate for `repl::sync::DOWN_AFTER`; the fabric takes the node out at once (before its
    /// lease expires) and back when no such key is left.
    pub fn suspects(&self) -> String {
        format!("{}suspect/", self.root)
    }
    pub fn suspect(&self, node: &str, reporter: &str) -> String {
        format!("{}suspect/{node}.by.{reporter}", self.root)
    }
    pub fn election(&self) -> String {
        format!("{}election", self.root)
    }
}

/// Node and tenant ids: short, printable, safe in keys, file names and logs.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Shard value: `node-1,node-4,node-7`.
pub fn encode_shard(shard: &[String]) -> String {
    shard.join(",")
}

pub fn decode_shard(v: &str) -> Vec<String> {
    let mut s: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect();
    s.sort();
    s.dedup();
    s
}

/// Shard value in slot order, as written (the controller keeps a surviving node's position
/// when it repairs a shard, see `controller::keep_slots`): node i owns slice i of each of the
/// tenant's NAT port ranges ([`port_slice`]), so its return traffic can be routed to it.
pub fn decode_slots(v: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// Slice `i` of `k` of the port range `first..=last` (contiguous, sizes differ by at most one,
/// together they cover the range). None if the range has fewer than `k` ports.
pub fn port_slice(first: u16, last: u16, i: usize, k: usize) -> Option<(u16, u16)> {
    let size = u32::from(last).checked_sub(u32::from(first))? + 1;
    if k == 0 || i >= k || size < k as u32 {
        return None;
    }
    let at = |j: usize| u32::from(first) + (size as u64 * j as u64 / k as u64) as u32;
    Some((at(i) as u16, (at(i + 1) - 1) as u16))
}

/// An IPv4 prefix `a.b.c.d/len` (a bare address is a /32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("bad IPv4 address in {s:?}"))?;
        let len: u8 = l
            .trim()
            .parse()
            .map_err(|_| format!("bad prefix length in {s:?}"))?;
        if len > 32 {
            return Err(format!("prefix length > 32 in {s:?}"));
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        if u32::from(addr) & !mask != 0 {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the fleet needs to know about a tenant (`tenants/<id>`, YAML):
///
/// ```yaml
/// kind: nat                     # nat | lb: placement does not care, the node config does
/// public: [203.0.113.10/32]     # public IPs / VIPs: routed by destination to the shard
/// inside: [10.1.0.0/24]         # inside prefixes: policy-routed by source to the shard
/// config: {...}                 # the tenant's data-path config (a nat_gateways entry, ...)
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpecRaw {
    pub kind: String,
    #[serde(default)]
    pub public: Vec<String>,
    #[serde(default)]
    pub inside: Vec<String>,
    #[serde(default)]
    pub config: Option<serde_yaml::Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TenantSpec {
    pub kind: String,
    pub public: Vec<Prefix>,
    pub inside: Vec<Prefix>,
    pub config: Option<serde_yaml::Value>,
}

impl TenantSpec {
    pub fn parse(text: &str) -> Result<TenantSpec, String> {
        let raw: TenantSpecRaw = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if raw.kind != "nat" && raw.kind != "lb" {
            return Err(format!("kind {:?}: expected nat or lb", raw.kind));
        }
        let parse_all = |v: &[String]| {
            v.iter()
                .map(|s| Prefix::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(TenantSpec {
            kind: raw.kind,
            public: parse_all(&raw.public)?,
            inside: parse_all(&raw.inside)?,
            config: raw.config,
        })
    }
}

impl TenantSpec {
    /// The tenant's NAT port range (`config.port_range`, flowgate's defaults 1024-65535).
    pub fn port_range(&self) -> (u16, u16) {
        let r = self.config.as_ref().map(|c| &c["port_range"]);
        let get = |f: &str, d: u16| {
            r.and_then(|r| r[f].as_u64())
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(d)
        };
        (get("first", 1024), get("last", 65535))
    }
}

/// The suspected node of a `suspect/` key suffix (`<node>.by.<reporter>`).
pub fn suspected_node(key: &str) -> Option<&str> {
    key.rsplit_once(".by.").map(|(n, _)| n)
}

/// Strips `prefix` from every key of a listing; drops keys with invalid ids.
pub fn strip(prefix: &str, kvs: Vec<(String, String)>) -> BTreeMap<String, String> {
    kvs.into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v)))
        .filter(|(k, _)| valid_id(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("prod");
        assert_eq!(k.node("n1"), "/flowgate/prod/nodes/n1");
        assert_eq!(k.placement("gw1"), "/flowgate/prod/placements/gw1");
        assert!(k.placement("gw1").starts_with(&k.placements()));
        assert_eq!(k.suspect("n1", "n2"), "/flowgate/prod/suspect/n1.by.n2");
        assert_eq!(suspected_node("n1.by.n2"), Some("n1"));
        assert_eq!(suspected_node("n1"), None);
    }

    #[test]
    fn ids_and_shards() {
        assert!(valid_id("node-1") && valid_id("gw_1.a"));
        assert!(
            !valid_id("") && !valid_id("a/b") && !valid_id("a b") && !valid_id(&"x".repeat(65))
        );
        assert_eq!(decode_shard(" n3,n1,,n1 "), ["n1", "n3"]);
        assert_eq!(encode_shard(&decode_shard("b,a")), "a,b");
    }

    #[test]
    fn tenant_spec() {
        let t = TenantSpec::parse("kind: nat\npublic: [203.0.113.10, 198.18.0.0/24]\ninside: [10.1.0.0/24]\nconfig: {id: gw1}\n")
            .unwrap();
        assert_eq!(t.public[0].to_string(), "203.0.113.10/32");
        assert_eq!(t.public[1].len, 24);
        assert_eq!(t.inside[0].to_string(), "10.1.0.0/24");
        assert!(TenantSpec::parse("kind: nat\npublic: [10.0.0.1/8]\n")
            .unwrap_err()
            .contains("host bits"));
        assert!(TenantSpec::parse("kind: gre\n")
            .unwrap_err()
            .contains("nat or lb"));
        assert!(TenantSpec::parse("kind: nat\nbogus: 1\n").is_err());
    }

    #[test]
    fn slots_and_port_slices() {
        assert_eq!(decode_slots(" n3,n1,,n3 "), ["n3", "n1"]);
        assert_eq!(port_slice(1024, 65535, 0, 2), Some((1024, 33279)));
        assert_eq!(port_slice(1024, 65535, 1, 2), Some((33280, 65535)));
        // Three slices of 10 ports: 3/3/4, contiguous, covering.
        let s: Vec<_> = (0..3).map(|i| port_slice(0, 9, i, 3).unwrap()).collect();
        assert_eq!(s, [(0, 2), (3, 5), (6, 9)]);
        assert_eq!(port_slice(5, 5, 0, 1), Some((5, 5)));
        assert_eq!(port_slice(5, 5, 0, 2), None);
        assert_eq!(port_slice(5, 4, 0, 1), None);
        let t = TenantSpec::parse("kind: nat\nconfig: {port_range: {first: 20000}}\n").unwrap();
        assert_eq!(t.port_range(), (20000, 65535));
        assert_eq!(
            TenantSpec::parse("kind: lb\n").unwrap().port_range(),
            (1024, 65535)
        );
    }

    #[test]
    fn strip_drops_bad_ids() {
        let m = strip(
            "/f/n/",
            vec![
                ("/f/n/a".into(), "1".into()),
                ("/f/n/x/y".into(), "2".into()),
                ("/g/b".into(), "3".into()),
            ],
        );
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![("a".to_string(), "1".to_string())]
        );
    }
}
