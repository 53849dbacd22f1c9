//! Semantic checks of a parsed `Config`, one small function per section.
//!
//! Every check reports through `Validator::fail(path, message)`, which finds the line and
//! column of `path` in the original text (or of its nearest written ancestor). To validate a
//! new section, write `fn check_SECTION(cfg: &Config, v: &mut Validator)` and append it to
//! `SECTIONS`; the order of `SECTIONS` is the order in which errors are found, and
//! `Config::validate` reports the first.

use super::error::{ConfigError, FieldPath};
use super::locate::Locator;
use super::{Config, Ipv4Net, PortConfig, PortRole};
use std::fmt::Display;

/// Collects semantic errors, each placed at the line and column of its field.
pub struct Validator<'a> {
    file: &'a str,
    locator: Locator,
    errors: Vec<ConfigError>,
}

impl<'a> Validator<'a> {
    /// `text` is the YAML the config was parsed from (used only to find positions; an empty
    /// text puts every error at 1:1), `file` the name errors carry.
    pub fn new(text: &str, file: &'a str) -> Self {
        Validator {
            file,
            locator: Locator::new(text),
            errors: Vec::new(),
        }
    }

    /// The error "field `path` is wrong: `message`", placed where `path` is written.
    pub fn error_at(&self, path: impl Into<FieldPath>, message: impl Into<String>) -> ConfigError {
        let path = path.into();
        let pos = self.locator.locate(&path);
        ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            field: path.to_field(),
            message: message.into(),
        }
    }

    /// Records that the field at `path` is wrong.
    pub fn fail(&mut self, path: impl Into<FieldPath>, message: impl Into<String>) {
        let e = self.error_at(path, message);
        self.errors.push(e);
    }

    /// Checks `lo <= value <= hi`; on failure records "`value` is out of range lo..=hi" with
    /// `note` appended (start it with a space or `;`, or pass ""). Returns whether it passed.
    pub fn in_range<T: PartialOrd + Display>(
        &mut self,
        path: impl Into<FieldPath>,
        value: T,
        lo: T,
        hi: T,
        note: &str,
    ) -> bool {
        if value < lo || value > hi {
            self.fail(path, format!("{value} is out of range {lo}..={hi}{note}"));
            false
        } else {
            true
        }
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }
}

/// A section's checks.
pub type SectionCheck = fn(&Config, &mut Validator<'_>);

/// All section checks, in the order their errors are reported. Sections that others depend
/// on (lcores, ports) come first so that the first error is the root cause.
pub const SECTIONS: &[SectionCheck] = &[
    check_lcores,
    check_ports,
    check_mempool,
    check_routes,
    check_exception,
    check_worker,
    check_neighbor,
    super::nat::check_nat_gateways,
    super::lb::check_load_balancers,
    super::limits::check_tenant_limits,
    super::logs::check_logs,
    super::replication::check_replication,
];

/// Runs every section check.
pub fn run_all(cfg: &Config, v: &mut Validator<'_>) {
    for check in SECTIONS {
        check(cfg, v);
    }
}

/// DPDK's default RTE_MAX_LCORE.
pub const MAX_LCORE: u32 = 128;
pub const MTU_MIN: u32 = 68;
/// ENA's maximum; EC2 itself carries 9001 inside a VPC.
pub const MTU_MAX: u32 = 9216;
pub const QUEUES_MAX: u16 = 16;
pub const DESC_MIN: u16 = 64;
pub const DESC_MAX: u16 = 4096;
pub const MBUFS_MIN: u32 = 1024;
/// RTE_MEMPOOL_CACHE_MAX_SIZE.
pub const CACHE_MAX: u32 = 512;
/// Ethernet header (14) + CRC (4): the frame size DPDK derives from an MTU.
pub const FRAME_OVERHEAD: u32 = 18;
/// RTE_PKTMBUF_HEADROOM.
pub const MBUF_HEADROOM: u32 = 128;
/// mbuf buf_len is a u16, and holds the headroom too.
pub const DATA_ROOM_MAX: u32 = 65535 - MBUF_HEADROOM;

fn check_lcores(cfg: &Config, v: &mut Validator<'_>) {
    let l = &cfg.lcores;
    let max = MAX_LCORE - 1;
    v.in_range("lcores.main", l.main, 0, max, " (RTE_MAX_LCORE is 128)");
    if l.workers.is_empty() {
        v.fail(
            "lcores.workers",
            "at least one worker lcore is required (e.g. workers: [1])",
        );
    }
    for (i, &w) in l.workers.iter().enumerate() {
        let path = format!("lcores.workers[{i}]");
        if w > max {
            v.fail(
                path,
                format!("lcore {w} is out of range 0..={max} (RTE_MAX_LCORE is 128)"),
            );
        } else if w == l.main {
            v.fail(
                path,
                format!(
                    "lcore {w} is the main lcore (lcores.main); workers need lcores of their own"
                ),
            );
        } else if let Some(j) = l.workers[..i].iter().position(|&x| x == w) {
            v.fail(
                path,
                format!("lcore {w} is listed twice (also lcores.workers[{j}])"),
            );
        }
    }
}

/// `[a-z0-9_-]+`
fn valid_port_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// What makes two devices the same: the vdev name before the first `,` (DPDK refuses two
/// vdevs of one name), or the PCI address with the domain made explicit, in lowercase.
fn device_key(device: &str) -> String {
    let name = device
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // bus:dev.fn without a domain -> 0000:bus:dev.fn
    let b = name.as_bytes();
    if b.len() == 7 && b[2] == b':' && b[5] == b'.' {
        format!("0000:{name}")
    } else {
        name
    }
}

fn port_by_name<'c>(cfg: &'c Config, name: &str) -> Option<&'c PortConfig> {
    cfg.ports.iter().find(|p| p.name == name)
}

fn port_names(cfg: &Config) -> String {
    let names: Vec<String> = cfg.ports.iter().map(|p| format!("`{}`", p.name)).collect();
    names.join(", ")
}

fn check_ports(cfg: &Config, v: &mut Validator<'_>) {
    if cfg.ports.is_empty() {
        v.fail("ports", "at least one port is required");
        return;
    }
    if !cfg.ports.iter().any(|p| p.role == PortRole::Data) {
        v.fail(
            "ports",
            "at least one port needs role `data`; exception ports do not forward",
        );
    }
    for (i, p) in cfg.ports.iter().enumerate() {
        check_port(cfg, i, p, v);
    }
}

fn check_port(cfg: &Config, i: usize, p: &PortConfig, v: &mut Validator<'_>) {
    let base = format!("ports[{i}]");
    let earlier = &cfg.ports[..i];

    if !valid_port_name(&p.name) {
        v.fail(
            format!("{base}.name"),
            format!("port name `{}` must match [a-z0-9_-]+", p.name),
        );
    } else if let Some(j) = earlier.iter().position(|q| q.name == p.name) {
        v.fail(
            format!("{base}.name"),
            format!("duplicate port name `{}` (also ports[{j}].name)", p.name),
        );
    }

    let key = device_key(&p.device);
    if key.is_empty() {
        v.fail(
            format!("{base}.device"),
            "device is empty; give a PCI address (0000:00:06.0) or a vdev (net_tap0,iface=fg0)",
        );
    } else if let Some(j) = earlier.iter().position(|q| device_key(&q.device) == key) {
        v.fail(
            format!("{base}.device"),
            format!(
                "device `{}` is already used by ports[{j}] (`{}`)",
                key, cfg.ports[j].name
            ),
        );
    }

    v.in_range(
        format!("{base}.mtu"),
        p.mtu,
        MTU_MIN,
        MTU_MAX,
        " (ENA allows up to 9216; EC2 carries 9001 inside a VPC, 1500 toward the internet)",
    );
    v.in_range(format!("{base}.queues"), p.queues, 1, QUEUES_MAX, "");
    for (field, d) in [("rx_desc", p.rx_desc), ("tx_desc", p.tx_desc)] {
        if !d.is_power_of_two() || !(DESC_MIN..=DESC_MAX).contains(&d) {
            v.fail(
                format!("{base}.{field}"),
                format!("{field} {d} must be a power of two in {DESC_MIN}..={DESC_MAX}"),
            );
        }
    }

    for (j, a) in p.addresses.iter().enumerate() {
        check_port_address(cfg, i, j, a, v);
    }
}

fn check_port_address(cfg: &Config, i: usize, j: usize, a: &Ipv4Net, v: &mut Validator<'_>) {
    let path = format!("ports[{i}].addresses[{j}]");
    if a.len == 0 {
        v.fail(
            path,
            format!("{a}: prefix length must be 1..=32 for an interface address"),
        );
        return;
    }
    if a.len <= 30 && (a.addr == a.network() || a.addr == a.broadcast()) {
        let what = if a.addr == a.network() {
            "network"
        } else {
            "broadcast"
        };
        v.fail(
            path,
            format!(
                "{a} is the {what} address of {}/{}; an interface address must be a host address",
                a.network(),
                a.len
            ),
        );
        return;
    }
    // Every address written before this one, in this port or an earlier one.
    let before = cfg.ports[..=i].iter().enumerate().flat_map(|(k, q)| {
        let n = if k == i { j } else { q.addresses.len() };
        q.addresses[..n]
            .iter()
            .enumerate()
            .map(move |(l, b)| (k, l, b))
    });
    for (k, l, b) in before {
        if b.addr == a.addr {
            v.fail(
                path,
                format!(
                    "address {} is already assigned at ports[{k}].addresses[{l}]",
                    a.addr
                ),
            );
            return;
        }
        if k != i && a.overlaps(b) {
            v.fail(
                path,
                format!(
                    "subnet {}/{} overlaps {} of port `{}` (ports[{k}].addresses[{l}]); \
                     a subnet belongs to one port",
                    a.network(),
                    a.len,
                    b,
                    cfg.ports[k].name
                ),
            );
            return;
        }
    }
}

fn check_mempool(cfg: &Config, v: &mut Validator<'_>) {
    let m = &cfg.mempool;
    if m.mbufs < MBUFS_MIN {
        v.fail(
            "mempool.mbufs",
            format!(
                "{} mbufs is too few: at least {MBUFS_MIN} (a power of two minus one, \
                 such as 4095 or 16383, fills the pool's rings best)",
                m.mbufs
            ),
        );
    }
    if m.cache > CACHE_MAX {
        v.fail(
            "mempool.cache",
            format!("cache {} is above DPDK's maximum of {CACHE_MAX}", m.cache),
        );
    } else if u64::from(m.cache) * 3 > u64::from(m.mbufs) * 2 {
        v.fail(
            "mempool.cache",
            format!(
                "cache {} is more than mbufs / 1.5 ({}); DPDK refuses such a pool",
                m.cache,
                u64::from(m.mbufs) * 2 / 3
            ),
        );
    }
    // The port with the largest (valid) MTU decides the smallest data room.
    let largest = cfg
        .ports
        .iter()
        .enumerate()
        .filter(|(_, p)| (MTU_MIN..=MTU_MAX).contains(&p.mtu))
        .max_by_key(|(i, p)| (p.mtu, std::cmp::Reverse(*i)));
    if let Some((i, p)) = largest {
        let need = p.mtu + FRAME_OVERHEAD;
        if m.data_room < need && !m.scatter {
            v.fail(
                "mempool.data_room",
                format!(
                    "data_room {} is too small for port `{}` (ports[{i}], mtu {}): it needs at \
                     least {need} (mtu + {FRAME_OVERHEAD} bytes of Ethernet header and CRC)",
                    m.data_room, p.name, p.mtu
                ),
            );
            return;
        }
    }
    if m.data_room > DATA_ROOM_MAX {
        v.fail(
            "mempool.data_room",
            format!(
                "data_room {} is above {DATA_ROOM_MAX} (an mbuf buffer is at most 65535 bytes, \
                 {MBUF_HEADROOM} of them headroom)",
                m.data_room
            ),
        );
    }
}

fn check_routes(cfg: &Config, v: &mut Validator<'_>) {
    for (i, r) in cfg.routes.iter().enumerate() {
        let base = format!("routes[{i}]");
        let net = r.prefix.network();
        if r.prefix.addr != net {
            v.fail(
                format!("{base}.prefix"),
                format!(
                    "prefix {} has host bits set; did you mean {net}/{}?",
                    r.prefix, r.prefix.len
                ),
            );
        } else if let Some(j) = cfg.routes[..i]
            .iter()
            .position(|q| q.prefix.len == r.prefix.len && q.prefix.network() == net)
        {
            v.fail(
                format!("{base}.prefix"),
                format!(
                    "duplicate route for {net}/{} (also routes[{j}])",
                    r.prefix.len
                ),
            );
        }

        let Some(p) = port_by_name(cfg, &r.port) else {
            v.fail(
                format!("{base}.port"),
                format!("no port named `{}` (ports: {})", r.port, port_names(cfg)),
            );
            continue;
        };
        if p.role != PortRole::Data {
            v.fail(
                format!("{base}.port"),
                format!(
                    "port `{}` has role exception; routes need a data port (exception ports have \
                     no routes)",
                    p.name
                ),
            );
            continue;
        }
        if let Some(via) = r.via {
            if p.addresses.iter().any(|a| a.addr == via) {
                v.fail(
                    format!("{base}.via"),
                    format!(
                        "next hop {via} is the appliance's own address on port `{}`",
                        p.name
                    ),
                );
            } else if !p.addresses.iter().any(|a| a.contains(via)) {
                let subnets = if p.addresses.is_empty() {
                    "it has no addresses".to_string()
                } else {
                    let s: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
                    s.join(", ")
                };
                v.fail(
                    format!("{base}.via"),
                    format!(
                        "next hop {via} is not inside a connected subnet of port `{}` ({subnets})",
                        p.name
                    ),
                );
            }
        }
        if let Some(mtu) = r.mtu {
            let note = format!(" (at most the mtu of port `{}`)", p.name);
            v.in_range(format!("{base}.mtu"), mtu, MTU_MIN, p.mtu, &note);
        }
    }
}

fn check_exception(cfg: &Config, v: &mut Validator<'_>) {
    let named = cfg.exception.as_ref().map(|e| e.port.as_str());
    if let Some(name) = named {
        match port_by_name(cfg, name) {
            None => v.fail(
                "exception.port",
                format!("no port named `{name}` (ports: {})", port_names(cfg)),
            ),
            Some(p) if p.role != PortRole::Exception => v.fail(
                "exception.port",
                format!(
                    "port `{name}` has role data; the exception port needs `role: exception` \
                     (a tap port such as net_tap0,iface=fgx0)"
                ),
            ),
            Some(_) => {}
        }
    }
    for (i, p) in cfg.ports.iter().enumerate() {
        if p.role == PortRole::Exception && named != Some(p.name.as_str()) {
            v.fail(
                format!("ports[{i}].role"),
                format!(
                    "port `{}` has role exception but is not the exception port \
                     (exception.port); only one exception port is used",
                    p.name
                ),
            );
        }
    }
}

fn check_worker(cfg: &Config, v: &mut Validator<'_>) {
    let w = &cfg.worker;
    v.in_range("worker.burst", w.burst, 1, 32, "");
    v.in_range(
        "worker.tx_drain_us",
        w.tx_drain_us,
        1,
        100_000,
        " (microseconds)",
    );
    v.in_range(
        "worker.idle_sleep_us",
        w.idle_sleep_us,
        0,
        10_000,
        " (microseconds; 0 is pure busy polling)",
    );
}

fn check_neighbor(cfg: &Config, v: &mut Validator<'_>) {
    let n = &cfg.neighbor;
    v.in_range("neighbor.timeout_s", n.timeout_s, 1, 86_400, " (seconds)");
    v.in_range("neighbor.pending_max", n.pending_max, 1, 4096, "");
}
