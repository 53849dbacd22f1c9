//! Every data-plane counter is declared once, here (VPP style): the drop reasons and the
//! per-worker event counters. Workers bump plain `u64`s they own; `publish` copies them
//! into the worker's `SharedCounters` slot with relaxed stores (plain moves on x86, no
//! locked instructions, no contention), and the control thread sums slots on scrape.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Why a packet was dropped. The label value of `flowgate_packets_dropped_total`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($variant),* }
        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant),*];
            pub const COUNT: usize = Self::ALL.len();
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name),* }
            }
            pub fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help),* }
            }
        }
    };
}

drop_reasons! {
    EthTruncated => "eth_truncated", "frame shorter than an Ethernet header";
    NotOurMac => "not_our_mac", "destination MAC neither the port's nor broadcast";
    UnknownEthertype => "unknown_ethertype", "neither IPv4 nor ARP";
    MultiSegment => "multi_segment", "chained mbuf not processed (no mempool.scatter, or no jumbo buffer free)";
    ArpMalformed => "arp_malformed", "ARP that is not Ethernet/IPv4 or is truncated";
    ArpNotForUs => "arp_not_for_us", "ARP neither asking for nor answering the appliance";
    Ipv4Truncated => "ipv4_truncated", "shorter than an IPv4 header";
    Ipv4BadVersion => "ipv4_bad_version", "IP version field not 4";
    Ipv4BadIhl => "ipv4_bad_ihl", "IHL below 5 or past the frame";
    Ipv4BadTotalLength => "ipv4_bad_total_length", "total length below the header or past the frame";
    Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum wrong";
    Ipv4Options => "ipv4_options", "IPv4 options present";
    Ipv4BadSource => "ipv4_bad_source", "source address is multicast, broadcast, loopback or ours";
    TcpTruncated => "tcp_truncated", "shorter than a TCP header";
    TcpBadOffset => "tcp_bad_offset", "TCP data offset below 5 or past the segment";
    TcpIllegalFlags => "tcp_illegal_flags", "illegal TCP flag combination (SYN+FIN, SYN+RST, none, xmas)";
    UdpTruncated => "udp_truncated", "shorter than a UDP header";
    UdpBadLength => "udp_bad_length", "UDP length below 8 or past the datagram";
    IcmpTruncated => "icmp_truncated", "shorter than an ICMP header";
    IcmpBadChecksum => "icmp_bad_checksum", "ICMP checksum wrong";
    TtlExceeded => "ttl_exceeded", "TTL reached 0 (time exceeded sent)";
    NoRoute => "no_route", "no route to the destination";
    FragNeeded => "frag_needed", "larger than the egress MTU with DF set (frag-needed sent)";
    FragFailed => "frag_failed", "fragmentation impossible (no buffers, or header too long)";
    NeighborUnresolved => "neighbor_unresolved", "next hop did not answer ARP in time, or the wait queue was full";
    NoExceptionPath => "no_exception_path", "for the appliance, not data plane, and no exception port";
    IcmpRateLimited => "icmp_rate_limited", "ICMP error not sent: rate limit";
    UnsupportedIcmp => "unsupported_icmp", "ICMP to the appliance other than echo request";
    TxFull => "tx_full", "the port's TX queue refused the packet";
    HandoffFull => "handoff_full", "the owner core's handoff ring was full";
    NatNoMapping => "nat_no_mapping", "NAT: inbound to a public IP with no mapping (unsolicited)";
    NatPortExhausted => "nat_port_exhausted", "NAT: no free public port toward this destination";
    NatTableFull => "nat_table_full", "NAT: the worker's flow table is full";
    NatTcpOutOfWindow => "nat_tcp_out_of_window", "NAT: TCP sequence number far outside the window";
    NatFragmentNotAllowed => "nat_fragment_not_allowed", "NAT: TCP or ICMP fragment (aws mode)";
    NatFragmentNoFlow => "nat_fragment_no_flow", "NAT: non-first fragment without a tracked first fragment";
    NatUnsupportedProtocol => "nat_unsupported_protocol", "NAT: protocol or ICMP type the NAT does not translate";
    NatIcmpErrorNoMapping => "nat_icmp_error_no_mapping", "NAT: ICMP error quoting a flow with no mapping";
    NatIcmpErrorMalformed => "nat_icmp_error_malformed", "NAT: ICMP error with a bad checksum or truncated quote";
    NatFiltered => "nat_filtered", "NAT: inbound refused by address-dependent filtering (rfc4787 mode)";
    NatIdleTimeoutRst => "nat_idle_timeout_rst", "NAT: inside TCP packet with no mapping (idle timeout); RST sent back";
    LbNoListener => "lb_no_listener", "LB: to a VIP on a protocol/port with no listener";
    LbNoTarget => "lb_no_target", "LB: the listener's target group has no target taking new flows";
    LbTableFull => "lb_table_full", "LB: the worker's flow table is full";
    LbPortExhausted => "lb_port_exhausted", "LB: full NAT found no free LB-address port toward the target";
    LbTupleConflict => "lb_tuple_conflict", "LB: the client endpoint already has a flow to that target through another listener";
    LbFragment => "lb_fragment", "LB: fragment to a VIP (not load balanced)";
    LbUnsupportedProtocol => "lb_unsupported_protocol", "LB: protocol or ICMP type a VIP does not serve";
    LbNoFlow => "lb_no_flow", "LB: target-side packet with no flow (or a RST with no flow)";
    LbDeregistered => "lb_deregistered", "LB: flow of a deregistered target after its deregistration delay";
    LbDeregisteredRst => "lb_deregistered_rst", "LB: flow of a deregistered target after its delay; RST sent back (connection termination)";
    LbIdleTimeoutRst => "lb_idle_timeout_rst", "LB: TCP packet of a flow removed by its idle timeout; RST sent back";
    LbUnhealthyTargetRst => "lb_unhealthy_target_rst", "LB: client TCP packet of a flow whose target is unhealthy; RST sent back";
    LbIcmpErrorNoFlow => "lb_icmp_error_no_flow", "LB: ICMP error quoting no LB flow";
    LbIcmpErrorMalformed => "lb_icmp_error_malformed", "LB: ICMP error with a bad checksum or truncated quote";
    NatTimeWaitReuse => "nat_time_wait_reuse", "NAT: event, not a drop — a port still in its TIME_WAIT guard toward this destination was reused (only guarded ports were left)";
    SpoofedOwnSource => "spoofed_own_source", "source is one of the appliance's addresses or a NAT public IP, received on a data port";
    RpfFailed => "rpf_failed", "reverse-path filter: no route back to the source (loose), or not through the receiving port (strict)";
    ForeignInsideSource => "foreign_inside_source", "received on a NAT gateway's inside port from a source in none of its inside prefixes";
    L4PortZero => "l4_port_zero", "TCP or UDP source or destination port 0";
    Land => "land", "source address equals destination address (land attack)";
    OversizeFrame => "oversize_frame", "IP packet larger than the receiving port's MTU (e.g. a GSO/GRO super-frame from a kernel peer)";
    NatTenantPpsLimit => "nat_tenant_pps_limit", "NAT: the gateway (tenant) is over its packets/s limit on this node";
    NatTenantNewFlowLimit => "nat_tenant_new_flow_limit", "NAT: the gateway (tenant) is over its new flows/s limit on this node";
    NatTenantFlowLimit => "nat_tenant_flow_limit", "NAT: the gateway (tenant) is at its concurrent-flow limit on this node";
    LbTenantPpsLimit => "lb_tenant_pps_limit", "LB: the load balancer (tenant) is over its packets/s limit on this node";
    LbTenantNewFlowLimit => "lb_tenant_new_flow_limit", "LB: the load balancer (tenant) is over its new flows/s limit on this node";
    LbTenantFlowLimit => "lb_tenant_flow_limit", "LB: the load balancer (tenant) is at its concurrent-flow limit on this node";
    NatDraining => "nat_draining", "NAT: new flow refused: the gateway is draining after a reload removed it";
    LbDraining => "lb_draining", "LB: new flow refused: the load balancer or VIP is draining after a reload removed it";
}

macro_rules! worker_counters {
    ($($field:ident => $help:literal;)*) => {
        /// Event counters a worker owns (everything except drops).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct EventCounters { $(pub $field: u64),* }
        impl EventCounters {
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), $help)),*];
            /// Number of event counters.
            pub const COUNT: usize = [$(stringify!($field)),*].len();
            /// The values in `FIELDS` order; an array, not a Vec: the worker publishes
            /// them on every idle poll and drain (a malloc/free pair there was ~6 % of
            /// its samples on the memif link, issue 11).
            pub fn values(&self) -> [u64; Self::COUNT] { [$(self.$field),*] }
            pub fn from_values(v: &[u64]) -> Self {
                let mut it = v.iter().copied();
                EventCounters { $($field: it.next().unwrap_or(0)),* }
            }
        }
    };
}

worker_counters! {
    rx_packets => "packets taken from rx queues by workers";
    forwarded_packets => "IPv4 packets routed to an egress port";
    icmp_echo_requests => "ICMP echo requests to the appliance's own addresses (answered)";
    icmp_time_exceeded_sent => "ICMP time exceeded messages sent";
    icmp_frag_needed_sent => "ICMP fragmentation-needed messages sent";
    fragments_created => "IPv4 fragments created for a smaller egress MTU";
    arp_requests_sent => "ARP requests sent to resolve next hops";
    arp_replies_sent => "ARP replies sent for the appliance's addresses";
    exception_to_kernel => "packets sent to the kernel on the exception port";
    exception_from_kernel => "packets from the kernel on the exception port";
    neighbor_held => "packets held while their next hop was resolved";
    handoff_sent => "packets passed to another worker through a handoff ring";
    handoff_received => "packets received from another worker's handoff ring";
    config_updates => "config snapshots applied by the worker";
    linearized => "chained mbufs (scatter rx) copied into one jumbo buffer";
}

/// One worker's counters, owned and bumped by that worker only.
#[derive(Debug, Clone)]
pub struct Counters {
    pub drops: [u64; DropReason::COUNT],
    pub events: EventCounters,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; DropReason::COUNT],
            events: EventCounters::default(),
        }
    }
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += *b;
        }
        let a = self.events.values();
        let b = other.events.values();
        let sum: Vec<u64> = a.iter().zip(b.iter()).map(|(x, y)| x + y).collect();
        self.events = EventCounters::from_values(&sum);
    }
}

/// Where a worker publishes its counters for the control thread.
pub struct SharedCounters {
    drops: Vec<AtomicU64>,
    events: Vec<AtomicU64>,
    /// Extra per-worker gauges/counters published by later stages (NAT, LB) by index.
    pub extra: Vec<AtomicU64>,
    /// Advanced by every publish (between bursts, also when idle): the control side's proof
    /// that the worker loop is running (`/healthz`).
    pub heartbeat: AtomicU64,
}

impl SharedCounters {
    pub fn new(extra: usize) -> Self {
        SharedCounters {
            drops: (0..DropReason::COUNT).map(|_| AtomicU64::new(0)).collect(),
            events: (0..EventCounters::FIELDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            extra: (0..extra).map(|_| AtomicU64::new(0)).collect(),
            heartbeat: AtomicU64::new(0),
        }
    }

    /// Called by the owning worker between bursts.
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.drops.iter().zip(c.drops.iter()) {
            slot.store(*v, Ordering::Relaxed);
        }
        for (slot, v) in self.events.iter().zip(c.events.values()) {
            slot.store(v, Ordering::Relaxed);
        }
        // Single writer: a plain load and store, no locked read-modify-write.
        let beat = self.heartbeat.load(Ordering::Relaxed);
        self.heartbeat
            .store(beat.wrapping_add(1), Ordering::Relaxed);
    }

    /// Called by the control thread.
    pub fn read(&self) -> Counters {
        let mut c = Counters::default();
        for (d, slot) in c.drops.iter_mut().zip(self.drops.iter()) {
            *d = slot.load(Ordering::Relaxed);
        }
        let v: Vec<u64> = self
            .events
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        c.events = EventCounters::from_values(&v);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_snake_case() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for n in names {
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
        }
    }

    #[test]
    fn publish_read_roundtrip_and_sum() {
        let mut c = Counters::default();
        c.drop(DropReason::NoRoute);
        c.events.forwarded_packets = 7;
        c.events.config_updates = 2;
        let s = SharedCounters::new(0);
        s.publish(&c);
        let r = s.read();
        assert_eq!(r.drops[DropReason::NoRoute as usize], 1);
        assert_eq!(r.events, c.events);
        let mut total = Counters::default();
        total.add(&r);
        total.add(&r);
        assert_eq!(total.events.forwarded_packets, 14);
        assert_eq!(total.drops[DropReason::NoRoute as usize], 2);
    }
}
