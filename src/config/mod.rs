//! Appliance configuration: YAML in conf/, parsed with serde_yaml, validated before use.
//!
//! `load(path)` returns a `Config` that has passed both parsing and semantic checks, or a
//! `ConfigError` whose Display is `FILE:LINE:COLUMN: field: what is wrong`.
//! The running appliance only ever swaps in a config that `load` accepted.

mod error;
mod lb;
mod limits;
mod locate;
mod logs;
mod nat;
mod replication;
#[cfg(test)]
mod tests;
mod validate;

pub use error::{ConfigError, FieldPath, Segment, FILE_FIELD};
pub use lb::{
    HealthCheckConfig, HealthCheckProtocol, ListenerConfig, ListenerProtocol, LoadBalancerConfig,
    TargetConfig, TargetGroupConfig,
};
pub use limits::TenantLimits;
pub use locate::{Locator, Pos};
pub use logs::{FlowLogsConfig, TranslationLogConfig, RING_RECORDS, STOP_DRAIN_MAX_S};
pub use nat::{nat_warnings, NatGatewayConfig, NatMode, NatPortRange, NatTimeouts};
pub use replication::ReplicationConfig;
pub use validate::{SectionCheck, Validator, SECTIONS};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

/// An IPv4 prefix such as `10.0.1.0/24`, or an interface address such as `10.0.1.1/24`
/// (the host bits are kept: `addr` is what was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: EalConfig,
    pub lcores: LcoreConfig,
    #[serde(default)]
    pub mempool: MempoolConfig,
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub exception: Option<ExceptionConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub neighbor: NeighborConfig,
    #[serde(default)]
    pub log_level: LogLevel,
    /// NAT gateways (tenants); none by default.
    #[serde(default)]
    pub nat_gateways: Vec<NatGatewayConfig>,
    /// Network load balancers (tenants); none by default.
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancerConfig>,
    /// VPC-style flow logs; off by default (see docs/operations.md).
    #[serde(default)]
    pub flow_logs: Option<FlowLogsConfig>,
    /// NAT translation log (mapping created / deleted); off by default.
    #[serde(default)]
    pub translation_log: Option<TranslationLogConfig>,
    /// Graceful stop: seconds SIGTERM keeps forwarding (readiness already failing) before
    /// the workers stop; default 0.
    #[serde(default = "logs::default_stop_drain_s")]
    pub stop_drain_s: u32,
    /// Flow-state replication to peer nodes (issue 10); off when absent.
    #[serde(default)]
    pub replication: Option<ReplicationConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EalConfig {
    /// Extra EAL arguments (`--file-prefix`, `--no-huge`, `-m`, `--lcores` ...). Arguments
    /// given after `--` on the command line are appended. `-l`/`--lcores` is derived from
    /// `lcores` when absent here.
    #[serde(default)]
    pub args: Vec<String>,
    /// Packet capture with `dpdk-dumpcap` / `dpdk-pdump` (rte_pdump in the primary). Unset
    /// means on; it needs hugepages and a shared runtime directory (not `--no-huge`,
    /// `--in-memory`, `--no-shconf`), otherwise it is off and the log says why.
    #[serde(default)]
    pub capture: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LcoreConfig {
    /// EAL lcore id of the control (main) lcore. Default 0.
    #[serde(default)]
    pub main: u32,
    /// EAL lcore ids that run the packet pipeline, one worker each. Non-empty, distinct,
    /// none equal to `main`.
    pub workers: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// mbufs in the pool (all ports share it). Default 16383.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// per-lcore cache. Default 256, at most 512 and at most mbufs / 1.5.
    #[serde(default = "default_cache")]
    pub cache: u32,
    /// mbuf data room in bytes excluding headroom. Must hold the largest port MTU + 18.
    /// Default 10240 (jumbo frames in one segment).
    #[serde(default = "default_data_room")]
    pub data_room: u32,
    /// Receive frames larger than the data room as chained mbufs (the `scatter` rx
    /// offload, e.g. ENA with 2 KiB buffers at MTU 9001; net_tap supports it): the data
    /// room may then be smaller than MTU + 18. Chains are copied into one buffer of a
    /// second, small pool of jumbo buffers (`linear_mbufs` of them) before processing.
    #[serde(default)]
    pub scatter: bool,
    /// Jumbo buffers for linearizing chained mbufs (with `scatter`). Default 1023.
    #[serde(default = "default_linear_mbufs")]
    pub linear_mbufs: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// A data-plane port (inside, outside, or both for one-armed).
    Data,
    /// A tap port toward the kernel: non-data-plane traffic for the appliance goes here,
    /// and whatever the kernel sends on it is transmitted out of the data ports.
    Exception,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name used by routes and metrics (`[a-z0-9_-]+`).
    pub name: String,
    /// PCI address (`0000:00:06.0`) or vdev string (`net_af_packet0,iface=veth1`,
    /// `net_tap0,iface=fg0`, `net_memif0,role=server`).
    pub device: String,
    /// Interface addresses of the appliance on this port, with prefix length.
    #[serde(default)]
    pub addresses: Vec<Ipv4Net>,
    /// 68..=9216; default 1500.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// rx/tx queue pairs, 1..=16; default 1. Worker i polls queue i % queues.
    #[serde(default = "default_queues")]
    pub queues: u16,
    #[serde(default = "default_role")]
    pub role: PortRole,
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Reverse-path filtering of packets received here (RFC 3704): `strict` (default:
    /// the route back to the source leaves through this port), `loose` (some route back
    /// exists) or `off`. Not applied on the exception port.
    #[serde(default)]
    pub rpf: RpfMode,
}

/// Reverse-path filtering mode of a port (see `PortConfig::rpf`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RpfMode {
    /// The route to the source must leave through the receiving port (RFC 3704 2.2).
    #[default]
    Strict,
    /// Some route to the source must exist (RFC 3704 2.4); with a default route this only
    /// refuses sources the appliance explicitly has no route for.
    Loose,
    Off,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: Ipv4Net,
    /// Egress port name.
    pub port: String,
    /// Next hop; absent means the destination is on-link.
    #[serde(default)]
    pub via: Option<Ipv4Addr>,
    /// Egress MTU for this route, 68..=port mtu; default the port's mtu.
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    /// Name of a port with role `exception`.
    pub port: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the /metrics HTTP server. Default 127.0.0.1:9100.
    #[serde(default = "default_metrics_listen")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// rx burst size, 1..=32. Default 32.
    #[serde(default = "default_burst")]
    pub burst: u16,
    /// TX buffers are flushed at least this often (l3fwd's drain timer). Default 100 us.
    #[serde(default = "default_tx_drain_us")]
    pub tx_drain_us: u32,
    /// When a poll finds nothing, sleep this long (0 = pure busy polling, the production
    /// setting; tests on small machines use ~20-100 to leave CPU to the kernel).
    #[serde(default)]
    pub idle_sleep_us: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    /// Seconds a learned entry stays valid. Default 300.
    #[serde(default = "default_neigh_timeout")]
    pub timeout_s: u32,
    /// Packets held per worker while waiting for ARP resolution. Default 64.
    #[serde(default = "default_pending")]
    pub pending_max: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

fn default_mbufs() -> u32 {
    16383
}
fn default_cache() -> u32 {
    256
}
fn default_data_room() -> u32 {
    10240
}
fn default_linear_mbufs() -> u32 {
    1023
}
fn default_mtu() -> u32 {
    1500
}
fn default_queues() -> u16 {
    1
}
fn default_role() -> PortRole {
    PortRole::Data
}
fn default_desc() -> u16 {
    1024
}
fn default_metrics_listen() -> std::net::SocketAddr {
    "127.0.0.1:9100".parse().unwrap()
}
fn default_burst() -> u16 {
    32
}
fn default_tx_drain_us() -> u32 {
    100
}
fn default_neigh_timeout() -> u32 {
    300
}
fn default_pending() -> u32 {
    64
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            mbufs: default_mbufs(),
            cache: default_cache(),
            data_room: default_data_room(),
            scatter: false,
            linear_mbufs: default_linear_mbufs(),
        }
    }
}
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}
impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            burst: default_burst(),
            tx_drain_us: default_tx_drain_us(),
            idle_sleep_us: 0,
        }
    }
}
impl Default for NeighborConfig {
    fn default() -> Self {
        NeighborConfig {
            timeout_s: default_neigh_timeout(),
            pending_max: default_pending(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ipv4Net

impl Ipv4Net {
    /// `None` when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then_some(Ipv4Net { addr, len })
    }

    /// The netmask as a host-order integer (`0xffffff00` for /24, 0 for /0).
    pub fn mask(&self) -> u32 {
        match self.len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n.min(32))),
        }
    }

    /// The address with the host bits cleared (`10.0.1.0` for `10.0.1.1/24`).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The address with the host bits set (`10.0.1.255` for `10.0.1.1/24`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `addr` is inside this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (u32::from(addr) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// Whether the two prefixes share any address (one contains the other).
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        (u32::from(self.addr) ^ u32::from(other.addr)) & (self.mask() & other.mask()) == 0
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    /// `a.b.c.d/len` with len 0..=32. A bare address is refused: the length must be written.
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((addr, len)) = s.split_once('/') else {
            return Err(format!(
                "`{s}` has no prefix length; write address/len, e.g. `{s}/24` or `{s}/32`"
            ));
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IPv4 address"))?;
        let len = match len.parse::<u8>() {
            Ok(n) if n <= 32 && len.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "`{s}`: prefix length `{len}` is not a number in 0..=32"
                ))
            }
        };
        Ok(Ipv4Net { addr, len })
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NetVisitor;
        impl Visitor<'_> for NetVisitor {
            type Value = Ipv4Net;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 prefix such as 10.0.1.1/24")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ipv4Net, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(NetVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// Loading

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(&file, format!("cannot read the file: {e}")))?;
    parse_str(&text, &file)
}

/// Parses and validates `text`; errors name `file`.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let cfg = parse_unvalidated(text, file)?;
    cfg.validate(text, file)?;
    Ok(cfg)
}

/// Parses `text` (syntax, types, unknown fields) without the semantic checks.
pub fn parse_unvalidated(text: &str, file: &str) -> Result<Config, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| parse_error(e, text, file))
}

impl Config {
    /// The semantic checks: the first error, placed at its field's line and column in
    /// `text` (the YAML this config was parsed from; "" puts errors at 1:1).
    pub fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        match self.validate_all(text, file).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every semantic error, in check order (see `SECTIONS`).
    pub fn validate_all(&self, text: &str, file: &str) -> Vec<ConfigError> {
        let mut v = Validator::new(text, file);
        validate::run_all(self, &mut v);
        v.into_errors()
    }
}

/// Maps a serde_yaml error to a `ConfigError`: serde_yaml gives the position,
/// serde_path_to_error the field.
fn parse_error(
    err: serde_path_to_error::Error<serde_yaml::Error>,
    text: &str,
    file: &str,
) -> ConfigError {
    let mut path = FieldPath::root();
    for seg in err.path() {
        path.push(match seg {
            serde_path_to_error::Segment::Seq { index } => Segment::Index(*index),
            serde_path_to_error::Segment::Map { key } => Segment::Key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Segment::Key(variant.clone()),
            serde_path_to_error::Segment::Unknown => Segment::Key("?".to_string()),
        });
    }
    let inner = err.inner();
    let location = inner.location();

    // serde_yaml's Display is "[PATH: ]MESSAGE[ at line L column C][, while ...]": keep the
    // message alone, since the path and position get their own places.
    let mut message = inner.to_string();
    if let Some(l) = &location {
        let at = format!(" at line {} column {}", l.line(), l.column());
        message = message.replacen(&at, "", 1);
    }
    let mut prefix = Some(path.clone());
    while let Some(p) = prefix {
        if !p.is_root() {
            if let Some(rest) = message.strip_prefix(&format!("{p}: ")) {
                message = rest.to_string();
                break;
            }
        }
        prefix = p.parent();
    }
    // serde reports a missing or duplicated field at the enclosing mapping: name the field
    // itself, and place a duplicate at its second occurrence (the locator keeps the last).
    let field_in = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix('`'))
            .filter(|name| !name.contains('`'))
            .map(str::to_string)
    };
    let mut located = None;
    if let Some(name) = field_in("missing field `") {
        path = path.key(&name);
    } else if let Some(name) = field_in("duplicate field `") {
        path = path.key(&name);
        located = Locator::new(text).find(&path);
    }

    let (line, column) = match (located, location) {
        (Some(pos), _) => (pos.line, pos.column),
        (None, Some(l)) => (l.line(), l.column()),
        (None, None) => {
            let pos = Locator::new(text).locate(&path);
            (pos.line, pos.column)
        }
    };
    ConfigError {
        file: file.to_string(),
        line,
        column,
        field: path.to_field(),
        message,
    }
}
