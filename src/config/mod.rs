//! Appliance configuration: YAML in conf/, parsed with serde_yaml, validated before use.
//!
//! `load(path)` returns a `Config` that has passed both parsing and semantic checks, or a
//! `ConfigError` whose Display is `FILE:LINE:COLUMN: field: what is wrong`.
//! The running appliance only ever swaps in a config that `load` accepted.

use serde::Deserialize;
use std::net::Ipv4Addr;

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
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EalConfig {
    /// Extra EAL arguments (`--file-prefix`, `--no-huge`, `-m`, `--lcores` ...). Arguments
    /// given after `--` on the command line are appended. `-l`/`--lcores` is derived from
    /// `lcores` when absent here.
    #[serde(default)]
    pub args: Vec<String>,
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

// TODO(config helper): Deserialize for Ipv4Net ("a.b.c.d/len"), ConfigError with
// FILE:LINE:COLUMN, load(), validate(), tests.
