//! The per-core run-to-completion pipeline.
//!
//! ```text
//!  rx burst ─► ingress: parse + validate ─► local? ── ARP ─────────► reply in place ─► tx
//!                │                             ├── ICMP echo ────► reply in place ─► tx
//!                │                             └── other ────────► exception port (kernel)
//!                └► transit ─► [stateful stages: NAT, LB] ─► route (LPM) ─► TTL / MTU
//!                                 ─► neighbor (ARP; hold while resolving) ─► tx buffer
//! ```
//!
//! `Pipeline` is plain Rust over `PacketBuf`, so every decision is unit-tested on
//! `VecBuf`s; `worker` runs it on DPDK mbufs. Every packet ends in exactly one of:
//! transmitted, held for ARP (bounded), or dropped with a counted reason.

pub mod counters;
pub mod frag;
pub mod handoff;
pub mod icmp_out;
pub mod neighbor;
pub mod offload;
pub mod parsed;
pub mod pmtu;
pub mod route;
pub mod rst;
pub mod spoof;
pub mod worker;

use crate::packet::{BufAlloc, PacketBuf};
use crate::wire::{
    arp, EtherType, EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, Malformed, TcpPacket,
    UdpPacket, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use counters::{Counters, DropReason};
use neighbor::{Held, NeighborTable, PendingQueue, Resolution};
pub use parsed::Parsed;
use route::Fib;
use std::net::Ipv4Addr;
use std::sync::Arc;

const ETH: usize = 14;

/// Where the pipeline puts packets it is done with.
pub trait Output<B> {
    /// Queue `pkt` for transmission on `port`.
    fn tx(&mut self, port: u16, pkt: B);
    /// Free `pkt` (its drop reason is already counted).
    fn discard(&mut self, pkt: B);
    /// Pass `pkt` to worker `worker`, which owns its flow. Returns false (and frees
    /// the packet) when that worker's ring is full.
    fn handoff(&mut self, worker: usize, pkt: B) -> bool {
        let _ = worker;
        self.discard(pkt);
        false
    }
}

impl From<Malformed> for DropReason {
    fn from(m: Malformed) -> DropReason {
        match m {
            Malformed::EthTruncated => DropReason::EthTruncated,
            Malformed::ArpMalformed => DropReason::ArpMalformed,
            Malformed::Ipv4Truncated => DropReason::Ipv4Truncated,
            Malformed::Ipv4BadVersion => DropReason::Ipv4BadVersion,
            Malformed::Ipv4BadIhl => DropReason::Ipv4BadIhl,
            Malformed::Ipv4BadTotalLength => DropReason::Ipv4BadTotalLength,
            Malformed::Ipv4BadChecksum => DropReason::Ipv4BadChecksum,
            Malformed::Ipv4Options => DropReason::Ipv4Options,
            Malformed::TcpTruncated => DropReason::TcpTruncated,
            Malformed::TcpBadOffset => DropReason::TcpBadOffset,
            Malformed::TcpIllegalFlags => DropReason::TcpIllegalFlags,
            Malformed::UdpTruncated => DropReason::UdpTruncated,
            Malformed::UdpBadLength => DropReason::UdpBadLength,
            Malformed::IcmpTruncated => DropReason::IcmpTruncated,
            Malformed::IcmpBadChecksum => DropReason::IcmpBadChecksum,
        }
    }
}

/// Tunables of one pipeline instance (from the config, in TSC cycles where timed).
#[derive(Debug, Clone, Copy)]
pub struct PipelineParams {
    pub tsc_hz: u64,
    pub neighbor_capacity: usize,
    pub neighbor_timeout_s: u32,
    pub pending_max: usize,
    /// ICMP errors per second a worker may send (RFC 1812 4.3.2.8 rate limiting).
    pub icmp_errors_per_s: u32,
}

impl PipelineParams {
    pub fn for_tests() -> Self {
        PipelineParams {
            tsc_hz: 1_000_000_000,
            neighbor_capacity: 1024,
            neighbor_timeout_s: 300,
            pending_max: 64,
            icmp_errors_per_s: 1000,
        }
    }
}

/// A token bucket refilled from the TSC.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: u64,
    cap: u64,
    cycles_per_token: u64,
    last: u64,
}

impl TokenBucket {
    fn new(per_s: u32, tsc_hz: u64) -> Self {
        let per_s = per_s.max(1) as u64;
        TokenBucket {
            tokens: per_s.min(100),
            cap: per_s.min(100),
            cycles_per_token: (tsc_hz / per_s).max(1),
            last: 0,
        }
    }
    #[inline]
    fn take(&mut self, now: u64) -> bool {
        let add = now.wrapping_sub(self.last) / self.cycles_per_token;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.cap);
            self.last = now;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

/// What a stateful stage (NAT, LB) decided about a transit packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageVerdict {
    /// Not this stage's traffic: route unchanged.
    Pass,
    /// Rewritten; route by the new destination.
    Translated,
    /// The packet was consumed (counted under the reason) and rewritten into a reply to
    /// its sender (e.g. a TCP RST); route the reply as originated.
    Respond(DropReason),
    /// Owned by another worker: hand it over unchanged.
    Handoff(usize),
    Drop(DropReason),
}

/// Burst lookahead distances (packets) of `Pipeline::prefetch_flow`: the flow index
/// bucket first, its entry once the bucket has had time to arrive.
pub const PREFETCH_BUCKET_AHEAD: usize = 4;
pub const PREFETCH_ENTRY_AHEAD: usize = 2;

/// The stateful stages a worker runs between ingress and routing.
pub trait Stages<B> {
    /// `p` is ingress's descriptor of `pkt` as received (parse once, issue 11 item 1).
    fn process(&mut self, pkt: &mut B, p: &Parsed, now: u64) -> StageVerdict;
    /// Amortized timer work between bursts.
    fn poll(&mut self, now: u64);
    /// Publish counters for the control thread now (idle time, shutdown).
    fn publish(&mut self) {}
}

/// What ingress decided.
enum Step {
    Tx(u16),
    Drop(DropReason),
    /// Used up here (e.g. an ARP reply we learned from); not a drop.
    Consumed,
    /// For the appliance, not data plane: to the kernel.
    Exception,
    /// Transit traffic: route it.
    Forward(Parsed),
    /// Sent by the kernel on the exception port: route it without a TTL decrement.
    Originated(Parsed),
}

/// A received burst the pipeline takes apart in order (the worker's `RxBurst`, a
/// benchmark's or test's `Vec`, taken from its end).
pub trait Burst<B> {
    /// Starts loading the headers of the packet `k` positions ahead of the next one.
    fn prefetch_ahead(&self, k: usize);
    /// The next packet; `None` at the end of the burst.
    fn next_packet(&mut self) -> Option<B>;
}

impl<B: PacketBuf> Burst<B> for Vec<B> {
    #[inline]
    fn prefetch_ahead(&self, k: usize) {
        if let Some(b) = self.len().checked_sub(k + 1).and_then(|i| self.get(i)) {
            b.prefetch();
        }
    }
    #[inline]
    fn next_packet(&mut self) -> Option<B> {
        self.pop()
    }
}

/// Most packets one `handle_burst` takes (the rest wait for the next call).
pub const BURST_MAX: usize = 32;

/// One worker's forwarding state. Owned by that worker; nothing in it is shared.
pub struct Pipeline<B> {
    pub fib: Arc<Fib>,
    /// NAT / LB stages, when the config has any (see `crate::stages`).
    pub stages: Option<crate::stages::StageChain>,
    pub neighbors: NeighborTable,
    pub pending: PendingQueue<B>,
    pub counters: Counters,
    /// Neighbors learned since the worker last reported to the control thread.
    pub learned: Vec<(u16, Ipv4Addr, MacAddr)>,
    icmp_bucket: TokenBucket,
    /// MAC of the kernel's side of the exception tap, learned from its frames.
    kernel_mac: Option<MacAddr>,
    pending_timeout: u64,
    last_neighbor_sweep: u64,
    /// Reused list of packets released from `pending` (no allocation per resolution).
    released: Vec<Held<B>>,
    /// `handle_burst`'s transit packets and their descriptors (capacity `BURST_MAX`,
    /// reused: no allocation per burst).
    transit: Vec<B>,
    transit_meta: Vec<(Parsed, bool)>,
    /// Bursts handled: makes the lookahead's packet ids unique across bursts.
    burst_seq: usize,
    /// Turns the burst lookahead off (benchmarks compare with and without it).
    pub no_lookahead: bool,
    params: PipelineParams,
}

const LEARNED_MAX: usize = 64;

impl<B: PacketBuf> Pipeline<B> {
    pub fn new(fib: Arc<Fib>, params: PipelineParams) -> Self {
        let hz = params.tsc_hz;
        Pipeline {
            fib,
            stages: None,
            neighbors: NeighborTable::new(
                params.neighbor_capacity,
                params.neighbor_timeout_s as u64 * hz,
                hz,
            ),
            pending: PendingQueue::new(params.pending_max),
            counters: Counters::default(),
            learned: Vec::with_capacity(LEARNED_MAX),
            icmp_bucket: TokenBucket::new(params.icmp_errors_per_s, hz),
            kernel_mac: None,
            pending_timeout: 3 * hz,
            last_neighbor_sweep: 0,
            released: Vec::with_capacity(params.pending_max),
            transit: Vec::with_capacity(BURST_MAX),
            transit_meta: Vec::with_capacity(BURST_MAX),
            burst_seq: 0,
            no_lookahead: false,
            params,
        }
    }

    pub fn params(&self) -> &PipelineParams {
        &self.params
    }

    /// Swap in a new forwarding snapshot (between bursts).
    /// Whether `prefetch_flow` calls do anything this burst (few flows: no).
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        self.stages.as_ref().is_some_and(|s| s.wants_lookahead())
    }

    /// Burst lookahead for the stateful stages (issue 11): call with the descriptor of
    /// the packet `PREFETCH_BUCKET_AHEAD` ahead (`deep` false) and of the one
    /// `PREFETCH_ENTRY_AHEAD` ahead (`deep` true) before handling each packet. `id`
    /// names the packet (unique within the last few bursts) so that the entry stage
    /// finds what the bucket stage computed.
    #[inline]
    pub fn prefetch_flow(&mut self, id: usize, p: &Parsed, deep: bool) {
        if let Some(s) = self.stages.as_mut() {
            s.prefetch(id, p, deep);
        }
    }

    /// Whether `prefetch_route` calls do anything this burst (a DIR-24-8 route table:
    /// its 64 MiB tbl24 is read at random; small tables stay cached).
    #[inline]
    pub fn wants_route_prefetch(&self) -> bool {
        self.fib.routes_dir24()
    }

    /// Burst lookahead for routing (issue 11 item 5): starts loading the route table line
    /// of `dst` (of a packet `PREFETCH_BUCKET_AHEAD` ahead). A hint.
    #[inline]
    pub fn prefetch_route(&self, dst: Ipv4Addr) {
        self.fib.prefetch_route(dst);
    }

    pub fn set_fib(&mut self, fib: Arc<Fib>) {
        self.fib = fib;
        self.counters.events.config_updates += 1;
    }

    /// Process one received packet to its end: transmitted, held, or dropped.
    #[inline]
    pub fn handle<A, O>(&mut self, mut pkt: B, rx_port: u16, now: u64, alloc: &mut A, out: &mut O)
    where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        self.counters.events.rx_packets += 1;
        match self.ingress(&mut pkt, rx_port, now) {
            Step::Forward(p) => self.forward(pkt, rx_port, false, &p, now, alloc, out),
            Step::Originated(p) => self.forward(pkt, rx_port, true, &p, now, alloc, out),
            step => self.finish_local(step, pkt, rx_port, out),
        }
    }

    /// Every packet that ingress did not pass on for routing.
    #[inline]
    fn finish_local<O: Output<B>>(&mut self, step: Step, pkt: B, rx_port: u16, out: &mut O) {
        match step {
            Step::Tx(port) => out.tx(port, pkt),
            Step::Drop(r) => {
                self.counters.drop(r);
                out.discard(pkt);
            }
            Step::Exception => self.send_to_kernel(pkt, rx_port, out),
            Step::Consumed | Step::Forward(_) | Step::Originated(_) => out.discard(pkt),
        }
    }

    /// Process a received burst to its end, vector style (issue 11 item 1, as VPP):
    /// first every packet is parsed and validated once (ingress; headers prefetched two
    /// ahead), local traffic (ARP, echo, exceptions) and drops finished at once; then the
    /// transit packets go through the stages and routing in order, with the flow-table
    /// buckets and entries and the route-table lines of the packets a few ahead already
    /// being loaded from their descriptors. Takes at most `BURST_MAX` packets.
    pub fn handle_burst<S, A, O>(
        &mut self,
        burst: &mut S,
        rx_port: u16,
        now: u64,
        alloc: &mut A,
        out: &mut O,
    ) where
        S: Burst<B>,
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        let mut pkts = std::mem::take(&mut self.transit);
        let mut metas = std::mem::take(&mut self.transit_meta);
        // Pass 1: parse once.
        burst.prefetch_ahead(0);
        burst.prefetch_ahead(1);
        for _ in 0..BURST_MAX {
            burst.prefetch_ahead(2);
            let Some(mut pkt) = burst.next_packet() else {
                break;
            };
            self.counters.events.rx_packets += 1;
            match self.ingress(&mut pkt, rx_port, now) {
                Step::Forward(p) => {
                    pkts.push(pkt);
                    metas.push((p, false));
                }
                Step::Originated(p) => {
                    pkts.push(pkt);
                    metas.push((p, true));
                }
                step => self.finish_local(step, pkt, rx_port, out),
            }
        }
        // Pass 2: stages and routing, looking ahead by descriptor.
        let look = self.wants_lookahead() && !self.no_lookahead;
        let look_route = self.wants_route_prefetch() && !self.no_lookahead;
        let base = self.burst_seq.wrapping_mul(BURST_MAX) + 1;
        self.burst_seq = self.burst_seq.wrapping_add(1);
        if look || look_route {
            for (j, (p, _)) in metas.iter().enumerate().take(PREFETCH_BUCKET_AHEAD) {
                if look {
                    self.prefetch_flow(base + j, p, false);
                }
                if look_route {
                    self.prefetch_route(p.dst);
                }
            }
        }
        for (j, pkt) in pkts.drain(..).enumerate() {
            if look || look_route {
                if let Some((a, _)) = metas.get(j + PREFETCH_BUCKET_AHEAD) {
                    if look {
                        self.prefetch_flow(base + j + PREFETCH_BUCKET_AHEAD, a, false);
                    }
                    if look_route {
                        self.prefetch_route(a.dst);
                    }
                }
                if look {
                    if let Some((e, _)) = metas.get(j + PREFETCH_ENTRY_AHEAD) {
                        self.prefetch_flow(base + j + PREFETCH_ENTRY_AHEAD, e, true);
                    }
                }
            }
            let (p, originated) = &metas[j];
            self.forward(pkt, rx_port, *originated, p, now, alloc, out);
        }
        metas.clear();
        self.transit = pkts;
        self.transit_meta = metas;
    }

    fn ingress(&mut self, pkt: &mut B, rx_port: u16, now: u64) -> Step {
        let fib = &self.fib;
        let Some(port) = fib.port(rx_port) else {
            return Step::Drop(DropReason::NoRoute);
        };
        let port_mac = port.mac;
        let from_kernel = port.exception;
        let d = pkt.data();
        let eth = match EthernetFrame::new_checked(d) {
            Ok(e) => e,
            Err(m) => return Step::Drop(m.into()),
        };
        let dst_mac = eth.dst_addr();
        let ethertype = eth.ethertype();
        if from_kernel {
            self.kernel_mac = Some(eth.src_addr());
        } else if dst_mac != port_mac && !dst_mac.is_broadcast() {
            return Step::Drop(DropReason::NotOurMac);
        }
        match ethertype {
            EtherType::ARP => self.arp_input(pkt, rx_port, port_mac, from_kernel, now),
            EtherType::IPV4 => self.ipv4_input(pkt, rx_port, port_mac, from_kernel),
            _ => Step::Drop(DropReason::UnknownEthertype),
        }
    }

    fn arp_input(
        &mut self,
        pkt: &mut B,
        rx_port: u16,
        port_mac: MacAddr,
        from_kernel: bool,
        now: u64,
    ) -> Step {
        let (op, sender_mac, sender_ip, target_ip) = {
            let a = match arp::ArpPacket::new_checked(&pkt.data()[ETH..]) {
                Ok(a) => a,
                Err(_) => return Step::Drop(DropReason::ArpMalformed),
            };
            (
                a.operation(),
                a.sender_hw_addr(),
                a.sender_ip(),
                a.target_ip(),
            )
        };
        if from_kernel {
            // The kernel resolves its next hops through us: answer every request with
            // the tap's own MAC so its traffic comes to the pipeline to be routed.
            if op == arp::ARP_REQUEST {
                arp_reply(pkt, port_mac, target_ip);
                self.counters.events.arp_replies_sent += 1;
                return Step::Tx(rx_port);
            }
            return Step::Consumed;
        }
        let for_us =
            self.fib.local_port(target_ip) == Some(rx_port) || self.fib.is_proxy_arp(target_ip);
        let on_link = self.fib.on_link(rx_port, sender_ip);
        if on_link && (for_us || op == arp::ARP_REPLY) && !sender_mac.is_multicast() {
            self.learn(rx_port, sender_ip, sender_mac, now);
        }
        if op == arp::ARP_REQUEST && for_us {
            arp_reply(pkt, port_mac, target_ip);
            self.counters.events.arp_replies_sent += 1;
            return Step::Tx(rx_port);
        }
        if op == arp::ARP_REPLY && for_us {
            return Step::Consumed;
        }
        Step::Drop(DropReason::ArpNotForUs)
    }

    fn learn(&mut self, port: u16, ip: Ipv4Addr, mac: MacAddr, now: u64) {
        let known = matches!(self.neighbors.lookup_quiet(port, ip), Some(m) if m == mac);
        self.neighbors.learn(port, ip, mac, now);
        if !known && self.learned.len() < LEARNED_MAX {
            self.learned.push((port, ip, mac));
        }
    }

    fn ipv4_input(
        &mut self,
        pkt: &mut B,
        rx_port: u16,
        port_mac: MacAddr,
        from_kernel: bool,
    ) -> Step {
        let mut parsed = {
            let ip = match Ipv4Packet::new_checked(&pkt.data()[ETH..]) {
                Ok(ip) => ip,
                Err(m) => return Step::Drop(m.into()),
            };
            if !ip.verify_checksum() {
                return Step::Drop(DropReason::Ipv4BadChecksum);
            }
            if ip.has_options() {
                return Step::Drop(DropReason::Ipv4Options);
            }
            Parsed {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
                total: ip.total_len(),
                ident: ip.ident(),
                frag_off: ip.frag_offset(),
                sport: 0,
                dport: 0,
                proto: ip.protocol(),
                ttl: ip.ttl(),
                hl: 20,
                tcp_flags: 0,
                more: ip.more_frags(),
                df: ip.dont_frag(),
            }
        };
        let (total, dst, src, proto) =
            (parsed.total as usize, parsed.dst, parsed.src, parsed.proto);
        let (is_frag, first_frag) = (parsed.is_fragment(), parsed.frag_off == 0);
        if spoof::bad_source(src) {
            return Step::Drop(DropReason::Ipv4BadSource);
        }
        if !from_kernel {
            if let Some(r) = spoof::check(&self.fib, rx_port, src, dst) {
                return Step::Drop(r);
            }
        }
        if !from_kernel && self.fib.port(rx_port).is_some_and(|p| total as u32 > p.mtu) {
            // A GSO/GRO super-frame from a kernel peer, or a frame the port cannot carry.
            return Step::Drop(DropReason::OversizeFrame);
        }
        // Drop Ethernet padding: from here on the frame is exactly the IP packet.
        pkt.set_len(ETH + total);
        if first_frag {
            if let Err(r) = check_l4(pkt.data(), &mut parsed) {
                return Step::Drop(r);
            }
        }
        if from_kernel {
            self.counters.events.exception_from_kernel += 1;
            return Step::Originated(parsed);
        }
        if self.fib.local_port(dst).is_some() {
            if proto == IPPROTO_ICMP && !is_frag {
                let t = pkt.data()[ETH + 20];
                if t == IcmpPacket::<&[u8]>::ECHO_REQUEST {
                    if let Err(r) = verify_icmp(pkt.data()) {
                        return Step::Drop(r);
                    }
                    icmp_out::echo_reply_in_place(pkt.data_mut(), port_mac);
                    self.counters.events.icmp_echo_requests += 1;
                    return Step::Tx(rx_port);
                }
            }
            return if self.fib.exception_port.is_some() {
                Step::Exception
            } else if proto == IPPROTO_ICMP {
                Step::Drop(DropReason::UnsupportedIcmp)
            } else {
                Step::Drop(DropReason::NoExceptionPath)
            };
        }
        if dst.is_broadcast() || self.fib.is_directed_broadcast(dst) {
            return if self.fib.exception_port.is_some() {
                Step::Exception
            } else {
                Step::Drop(DropReason::NoExceptionPath)
            };
        }
        if dst.is_multicast() {
            return Step::Drop(DropReason::NoRoute);
        }
        // Stateful stages (NAT gateway, load balancer) attach here: they rewrite the
        // packet before the route lookup, so a translated destination is what is routed.
        Step::Forward(parsed)
    }

    fn send_to_kernel<O: Output<B>>(&mut self, mut pkt: B, rx_port: u16, out: &mut O) {
        let Some(exc) = self.fib.exception_port else {
            self.counters.drop(DropReason::NoExceptionPath);
            out.discard(pkt);
            return;
        };
        // The kernel behind the tap verifies L4 checksums: a partial one from an af_packet
        // peer with tx checksum offload on (the kernel default) must be completed first.
        if self.fib.filters.untrusted_csum(rx_port) {
            offload::refresh_l4_checksum(pkt.data_mut());
        }
        let mac = self.fib.port(exc).map(|p| p.mac).unwrap_or(MacAddr::ZERO);
        let mut eth = EthernetFrame::new_unchecked(pkt.data_mut());
        eth.set_dst_addr(self.kernel_mac.unwrap_or(MacAddr::BROADCAST));
        eth.set_src_addr(mac);
        self.counters.events.exception_to_kernel += 1;
        out.tx(exc, pkt);
    }

    /// Route a packet: TTL, MTU (fragment or frag-needed), stateful stages, neighbor,
    /// transmit.
    ///
    /// The TTL and DF/MTU checks run on the packet as received, before any translation,
    /// so the ICMP errors they cause quote what the sender sent and go back to it.
    #[allow(clippy::too_many_arguments)]
    fn forward<A, O>(
        &mut self,
        mut pkt: B,
        rx_port: u16,
        originated: bool,
        p: &Parsed,
        now: u64,
        alloc: &mut A,
        out: &mut O,
    ) where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        let (dst, ttl, total, df) = (p.dst, p.ttl, p.total as u32, p.df);
        if !originated && ttl <= 1 {
            self.counters.drop(DropReason::TtlExceeded);
            if self.icmp_error(&mut pkt, rx_port, 11, 0, 0, now) {
                self.counters.events.icmp_time_exceeded_sent += 1;
                out.tx(rx_port, pkt);
            } else {
                out.discard(pkt);
            }
            return;
        }
        let pre_nat_route = self.fib.route(dst).copied();
        if let Some(nh) = pre_nat_route {
            if total > nh.mtu && df {
                let mtu = nh.mtu;
                self.counters.drop(DropReason::FragNeeded);
                if !originated && self.icmp_error(&mut pkt, rx_port, 3, 4, mtu & 0xffff, now) {
                    self.counters.events.icmp_frag_needed_sent += 1;
                    out.tx(rx_port, pkt);
                } else {
                    out.discard(pkt);
                }
                return;
            }
        }
        // A stage may route this DF packet to a smaller MTU: keep what the quote needs.
        let saved = (df && !originated && total > self.fib.min_egress_mtu && self.stages.is_some())
            .then(|| pmtu::SavedQuote::take(&pkt));
        let mut originated = originated;
        let mut dst = dst;
        let mut dst_changed = false;
        if let Some(stages) = self.stages.as_mut() {
            match Stages::<B>::process(stages, &mut pkt, p, now) {
                StageVerdict::Pass => {}
                StageVerdict::Translated => {
                    let new = Ipv4Packet::new_unchecked(&pkt.data()[ETH..]).dst_addr();
                    dst_changed = new != dst;
                    dst = new;
                }
                StageVerdict::Respond(r) => {
                    self.counters.drop(r);
                    originated = true;
                    dst = Ipv4Packet::new_unchecked(&pkt.data()[ETH..]).dst_addr();
                    dst_changed = true;
                }
                StageVerdict::Handoff(w) => {
                    if out.handoff(w, pkt) {
                        self.counters.events.handoff_sent += 1;
                    } else {
                        self.counters.drop(DropReason::HandoffFull);
                    }
                    return;
                }
                StageVerdict::Drop(r) => {
                    self.counters.drop(r);
                    out.discard(pkt);
                    return;
                }
            }
        }
        // Route once unless a stage moved the destination.
        let route = if dst_changed {
            self.fib.route(dst).copied()
        } else {
            pre_nat_route
        };
        let Some(nh) = route else {
            self.counters.drop(DropReason::NoRoute);
            out.discard(pkt);
            return;
        };
        if (pkt.len() - ETH) as u32 > nh.mtu
            && Ipv4Packet::new_unchecked(&pkt.data()[ETH..]).dont_frag()
        {
            // Only reachable after a translation changed the route: the error goes to
            // the remote sender quoting what it sent (the bytes saved before the stages).
            self.counters.drop(DropReason::FragNeeded);
            if let Some(q) = saved.as_ref().filter(|_| !originated) {
                q.restore(&mut pkt);
                if self.icmp_error(&mut pkt, rx_port, 3, 4, nh.mtu & 0xffff, now) {
                    self.counters.events.icmp_frag_needed_sent += 1;
                    out.tx(rx_port, pkt);
                    return;
                }
            }
            out.discard(pkt);
            return;
        }
        if !originated && self.fib.filters.untrusted_csum(rx_port) {
            offload::refresh_l4_checksum(pkt.data_mut());
        }
        if !originated {
            let mut ip = Ipv4Packet::new_unchecked(&mut pkt.data_mut()[ETH..]);
            ip.decrement_ttl();
        }
        if p.tcp_flags & TcpPacket::<&[u8]>::SYN != 0 {
            // Only a SYN carries an MSS (a stage's RST reply is re-checked there).
            clamp_mss(&mut pkt, nh.mtu);
        }
        let nh_ip = nh.neighbor(dst);
        match self.neighbors.lookup(nh.port, nh_ip, now) {
            Resolution::Known(mac) => self.emit(pkt, nh.port, mac, nh.mtu, alloc, out),
            Resolution::Stale(mac) => {
                self.send_arp_request(nh.port, nh_ip, alloc, out);
                self.emit(pkt, nh.port, mac, nh.mtu, alloc, out)
            }
            Resolution::Unknown { send_request } => {
                if send_request {
                    self.send_arp_request(nh.port, nh_ip, alloc, out);
                }
                let held = Held {
                    pkt,
                    port: nh.port,
                    next_hop: nh_ip,
                    mtu: nh.mtu,
                    since: now,
                };
                match self.pending.push(held) {
                    Ok(()) => self.counters.events.neighbor_held += 1,
                    Err(h) => {
                        self.counters.drop(DropReason::NeighborUnresolved);
                        out.discard(h.pkt);
                    }
                }
            }
        }
    }

    /// A packet another worker handed over because this worker owns its flow.
    pub fn handle_handoff<A, O>(&mut self, pkt: B, now: u64, alloc: &mut A, out: &mut O)
    where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        self.counters.events.handoff_received += 1;
        let rx_port = pkt.rx_port();
        // Validated by the worker that received it: only the descriptor is rebuilt.
        let Some(p) = Parsed::read(pkt.data()) else {
            self.counters.drop(DropReason::Ipv4Truncated);
            out.discard(pkt);
            return;
        };
        self.forward(pkt, rx_port, false, &p, now, alloc, out);
    }

    /// Transmit a routed packet to a resolved next hop, fragmenting if needed.
    fn emit<A, O>(
        &mut self,
        mut pkt: B,
        port: u16,
        mac: MacAddr,
        mtu: u32,
        alloc: &mut A,
        out: &mut O,
    ) where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        let src_mac = self.fib.port(port).map(|p| p.mac).unwrap_or(MacAddr::ZERO);
        {
            let mut eth = EthernetFrame::new_unchecked(pkt.data_mut());
            eth.set_dst_addr(mac);
            eth.set_src_addr(src_mac);
        }
        if pkt.len() - ETH > mtu as usize {
            let mut n = 0u64;
            let r = frag::fragment(&pkt, mtu, alloc, |f| {
                n += 1;
                out.tx(port, f)
            });
            self.counters.events.fragments_created += n;
            if r.is_none() {
                self.counters.drop(DropReason::FragFailed);
            } else {
                self.counters.events.forwarded_packets += 1;
            }
            out.discard(pkt);
            return;
        }
        self.counters.events.forwarded_packets += 1;
        out.tx(port, pkt);
    }

    /// Build an ICMP error in place (rate limited). False: the caller drops the packet.
    fn icmp_error(
        &mut self,
        pkt: &mut B,
        rx_port: u16,
        t: u8,
        code: u8,
        rest: u32,
        now: u64,
    ) -> bool {
        if !self.icmp_bucket.take(now) {
            self.counters.drop(DropReason::IcmpRateLimited);
            return false;
        }
        // Never answer an ICMP error with an ICMP error (RFC 1812 4.3.2.7).
        {
            let d = pkt.data();
            let ip = Ipv4Packet::new_unchecked(&d[ETH..]);
            if ip.protocol() == IPPROTO_ICMP && ip.frag_offset() == 0 {
                if let Ok(icmp) = IcmpPacket::new_checked(ip.payload()) {
                    if icmp.is_error() {
                        return false;
                    }
                }
            }
            if ip.frag_offset() != 0 {
                return false;
            }
        }
        let (Some(port), Some(src)) = (self.fib.port(rx_port), self.fib.source_address(rx_port))
        else {
            return false;
        };
        icmp_out::icmp_error_in_place(pkt, port.mac, t, code, rest, src)
    }

    fn send_arp_request<A, O>(&mut self, port: u16, target: Ipv4Addr, alloc: &mut A, out: &mut O)
    where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        let Some(p) = self.fib.port(port) else { return };
        let src = p
            .addresses
            .iter()
            .find(|a| a.contains(target))
            .or(p.addresses.first())
            .map(|a| a.addr);
        let (Some(src), mac) = (src, p.mac) else {
            return;
        };
        if let Some(mut b) = alloc.alloc() {
            if icmp_out::build_arp_request(&mut b, mac, src, target) {
                self.counters.events.arp_requests_sent += 1;
                out.tx(port, b);
            } else {
                out.discard(b);
            }
        }
    }

    /// A neighbor became known (learned here or told by the control thread): send
    /// what was waiting for it.
    pub fn neighbor_resolved<A, O>(
        &mut self,
        port: u16,
        ip: Ipv4Addr,
        mac: MacAddr,
        now: u64,
        alloc: &mut A,
        out: &mut O,
    ) where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        self.neighbors.learn(port, ip, mac, now);
        if self.pending.is_empty() {
            return;
        }
        let mut ready = std::mem::take(&mut self.released);
        self.pending.release(port, ip, |h| ready.push(h));
        for h in ready.drain(..) {
            self.emit(h.pkt, h.port, mac, h.mtu, alloc, out);
        }
        self.released = ready;
    }

    /// Release what `learned` recorded to its own pending queue (after a burst).
    pub fn release_learned<A, O>(&mut self, now: u64, alloc: &mut A, out: &mut O)
    where
        A: BufAlloc<Buf = B>,
        O: Output<B>,
    {
        if self.pending.is_empty() {
            return;
        }
        for i in 0..self.learned.len() {
            let (port, ip, mac) = self.learned[i];
            self.neighbor_resolved(port, ip, mac, now, alloc, out);
        }
    }

    /// Periodic work (drain-timer paced): expire held packets and stage state.
    pub fn poll_timers<O: Output<B>>(&mut self, now: u64, out: &mut O) {
        if let Some(s) = self.stages.as_mut() {
            Stages::<B>::poll(s, now);
        }
        let mut expired = 0;
        self.pending.expire(now, self.pending_timeout, |h| {
            expired += 1;
            out.discard(h.pkt)
        });
        self.counters.drops[DropReason::NeighborUnresolved as usize] += expired;
        // The neighbor sweep walks the table: once a second is plenty.
        if now.wrapping_sub(self.last_neighbor_sweep) >= self.params.tsc_hz {
            self.last_neighbor_sweep = now;
            self.neighbors
                .expire_incomplete(now, self.pending_timeout.saturating_mul(10));
        }
    }

    /// Free everything still held (shutdown).
    pub fn shutdown<O: Output<B>>(&mut self, out: &mut O) {
        self.pending.drain(|h| out.discard(h.pkt));
    }
}

fn arp_reply<B: PacketBuf>(pkt: &mut B, mac: MacAddr, ip: Ipv4Addr) {
    // ARP frames may arrive padded; the reply is the same size.
    icmp_out::arp_reply_in_place(pkt.data_mut(), mac, ip);
}

/// Transport header checks on the first (or only) fragment. Records the ports (and TCP
/// flags) in `p` for the later steps (parse once).
#[inline]
fn check_l4(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let (proto, is_frag) = (p.proto, p.is_fragment());
    let ip = Ipv4Packet::new_unchecked(&frame[ETH..]);
    let l4 = ip.payload();
    match proto {
        IPPROTO_TCP => {
            let tcp = TcpPacket::new_checked(l4).map_err(DropReason::from)?;
            if !tcp.flags_legal() {
                return Err(DropReason::TcpIllegalFlags);
            }
            let (sport, dport) = (tcp.src_port(), tcp.dst_port());
            if sport == 0 || dport == 0 {
                return Err(DropReason::L4PortZero);
            }
            (p.sport, p.dport, p.tcp_flags) = (sport, dport, tcp.flags());
        }
        IPPROTO_UDP => {
            if is_frag {
                // The UDP length covers the whole datagram, not this fragment.
                if l4.len() < UdpPacket::<&[u8]>::HEADER_LEN {
                    return Err(DropReason::UdpTruncated);
                }
            } else {
                UdpPacket::new_checked(l4).map_err(DropReason::from)?;
            }
            // Source and destination ports are the first 4 bytes (length checked above).
            let (sport, dport) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            if sport == 0 || dport == 0 {
                return Err(DropReason::L4PortZero);
            }
            (p.sport, p.dport) = (sport, dport);
        }
        IPPROTO_ICMP => {
            IcmpPacket::new_checked(l4).map_err(DropReason::from)?;
        }
        _ => {}
    }
    Ok(())
}

fn verify_icmp(frame: &[u8]) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_unchecked(&frame[ETH..]);
    let icmp = IcmpPacket::new_checked(ip.payload()).map_err(DropReason::from)?;
    if icmp.verify_checksum() {
        Ok(())
    } else {
        Err(DropReason::IcmpBadChecksum)
    }
}

/// Clamp the MSS option of a TCP SYN to what fits the egress MTU (SPEC §4).
#[inline]
fn clamp_mss<B: PacketBuf>(pkt: &mut B, mtu: u32) {
    let d = pkt.data_mut();
    let mut ip = Ipv4Packet::new_unchecked(&mut d[ETH..]);
    if ip.protocol() != IPPROTO_TCP || ip.frag_offset() != 0 {
        return;
    }
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    if tcp.flags() & TcpPacket::<&[u8]>::SYN == 0 {
        return;
    }
    let limit = mtu.saturating_sub(40).min(u16::MAX as u32) as u16;
    if let Some((_, mss)) = tcp.mss_option() {
        if mss > limit {
            tcp.set_mss_option(limit);
        }
    }
}

#[cfg(test)]
mod tests;
