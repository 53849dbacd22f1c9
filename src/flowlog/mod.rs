//! Flow logs (VPC Flow Logs, version 2 default format) and the NAT translation log
//! (RFC 6888 §4 / RFC 8158 mapping events), see docs/operations.md.
//!
//! Split between the two sides of the appliance:
//! - worker side (`tap`): fixed-size `Record`s built from counters kept beside each flow
//!   slot, pushed into the worker's preallocated SPSC ring (rtrb). No syscall, lock or
//!   allocation: a full ring only increments a loss counter (reported as SKIPDATA).
//! - control side (`writer`): one thread pops every ring, aggregates rejected packets
//!   per interval, formats (`format`) and writes rotating files (`rotate`) and stdout.
//!
//! `who` answers `flowgate ctl who PUBLIC_IP:PORT` from the translation log.
//!
//! The load balancer logs through the same parts (`crate::lb::log_hooks`): its own ring
//! per worker, `Record::LbFlow` / `LbMapping`, and REJECTs tagged with `LB_TENANT`.

pub mod format;
pub mod rotate;
pub mod tap;
pub mod time;
pub mod who;
pub mod writer;

pub use tap::{FlowStats, GwLog, Logged, Tap, TapShared};
pub use writer::LogSink;

use std::net::Ipv4Addr;

/// An IPv4 endpoint (host-order address, port; ICMP echo: the identifier).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: u32,
    pub port: u16,
}

impl Endpoint {
    pub fn new(ip: u32, port: u16) -> Endpoint {
        Endpoint { ip, port }
    }
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.addr(), self.port)
    }
}

/// What a worker tells the control side. Fixed size, `Copy`: pushed by value into a
/// preallocated ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// One NAT flow's traffic during (part of) one interval, both directions: `out_*` from
    /// the inside host to the remote, `in_*` back. Times in unix seconds.
    Flow {
        gw: u16,
        proto: u8,
        inside: Endpoint,
        remote: Endpoint,
        public: Endpoint,
        out_packets: u32,
        in_packets: u32,
        out_bytes: u64,
        in_bytes: u64,
        first_s: u32,
        last_s: u32,
    },
    /// A packet the gateway dropped (aggregated per 5-tuple and interval by the writer).
    Reject {
        gw: u16,
        proto: u8,
        src: Endpoint,
        dst: Endpoint,
        bytes: u16,
        t_s: u32,
    },
    /// A NAT mapping created or deleted (translation log). Unix milliseconds.
    Mapping {
        gw: u16,
        created: bool,
        proto: u8,
        inside: Endpoint,
        public: Endpoint,
        remote: Endpoint,
        t_ms: u64,
    },
    /// One load-balancer flow's traffic during (part of) one interval: `out_*` client to
    /// target, `in_*` back (the LB rewrites addresses, not lengths: both sides of the LB
    /// carry the same bytes). `snat_*`: the LB address and port the target sees (full
    /// NAT; 0 with client IP preservation). Raw fields, not `Endpoint`s, so the record
    /// stays within 64 bytes.
    LbFlow {
        lb: u16,
        proto: u8,
        client_ip: u32,
        client_port: u16,
        vip_ip: u32,
        vip_port: u16,
        target_ip: u32,
        target_port: u16,
        snat_ip: u32,
        snat_port: u16,
        out_packets: u32,
        in_packets: u32,
        out_bytes: u64,
        in_bytes: u64,
        first_s: u32,
        last_s: u32,
    },
    /// A load-balancer flow created or deleted (translation log). `snat`: as in `LbFlow`.
    LbMapping {
        lb: u16,
        created: bool,
        proto: u8,
        client: Endpoint,
        vip: Endpoint,
        target: Endpoint,
        snat: Endpoint,
        t_ms: u64,
    },
}

/// `Record::Reject`'s `gw` with this bit set names load balancer `gw & !LB_TENANT` (NAT
/// gateway and load balancer indexes are separate; both stay below 2^15).
pub const LB_TENANT: u16 = 0x8000;

/// Maps the TSC to wall-clock time without a syscall: sampled once on the control thread,
/// then `ms(tsc)` is arithmetic.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    tsc0: u64,
    ms0: u64,
    hz: u64,
}

impl Clock {
    /// Samples the wall clock now (control thread).
    pub fn sample(tsc_now: u64, hz: u64) -> Clock {
        let ms0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock::at(tsc_now, ms0, hz)
    }
    pub fn at(tsc0: u64, ms0: u64, hz: u64) -> Clock {
        Clock {
            tsc0,
            ms0,
            hz: hz.max(1),
        }
    }
    /// Unix milliseconds at `tsc`.
    #[inline]
    pub fn ms(&self, tsc: u64) -> u64 {
        let d = tsc.saturating_sub(self.tsc0);
        self.ms0 + d / self.hz * 1000 + (d % self.hz) * 1000 / self.hz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_converts_cycles_to_unix_ms() {
        let c = Clock::at(1_000, 1_700_000_000_000, 2_000_000_000);
        assert_eq!(c.ms(1_000), 1_700_000_000_000);
        assert_eq!(c.ms(1_000 + 3_000_000_000), 1_700_000_001_500);
        assert_eq!(c.ms(0), 1_700_000_000_000, "before the sample: clamped");
    }

    #[test]
    fn record_is_small() {
        assert!(
            std::mem::size_of::<Record>() <= 64,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
