//! Unit tests of the per-core pipeline: hand-built frames through `Pipeline::handle`
//! on `VecBuf`s, checked with the `wire` views and the pipeline's counters.
//!
//! Topology (from a YAML config, as the control thread builds it):
//!
//! ```text
//!  10.0.1.2 ── port 0 "client" 10.0.1.1/24    port 1 "server" 198.51.100.1/24 ── 198.51.100.2
//!              MAC 02:00:00:00:00:01          MAC 02:00:00:00:00:02          198.51.100.254 (gw)
//!  route 203.0.113.0/24 via 198.51.100.254, mtu 1280
//! ```

use super::counters::DropReason;
use super::route::Fib;
use super::{Output, Pipeline, PipelineParams};
use crate::config;
use crate::packet::{PacketBuf, VecAlloc, VecBuf};
use crate::wire::{
    arp, ArpPacket, EtherType, EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, TcpPacket,
    UdpPacket, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use std::net::Ipv4Addr;
use std::sync::Arc;

const ETH: usize = 14;
/// One second of TSC in `PipelineParams::for_tests()`.
const SEC: u64 = 1_000_000_000;

const MAC0: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const MAC1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
/// The exception (tap) port's MAC in the exception-port topology.
const MAC2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x03]);
/// 10.0.1.2, a client.
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x02]);
/// 198.51.100.2, a server.
const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x5e, 0x02]);
/// 198.51.100.254, the gateway toward 203.0.113.0/24.
const GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfe, 0xfe]);
/// The kernel's side of the exception tap.
const KERNEL_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x4b, 0x4b]);

const BASE_YAML: &str = "\
lcores:
  main: 0
  workers: [1]
ports:
  - name: client
    device: net_af_packet0,iface=fgc0
    addresses:
      - 10.0.1.1/24
    mtu: 1500
  - name: server
    device: net_af_packet1,iface=fgs0
    addresses:
      - 198.51.100.1/24
    mtu: 1500
routes:
  - prefix: 203.0.113.0/24
    port: server
    via: 198.51.100.254
    mtu: 1280
";

/// BASE_YAML plus a route for 192.0.2.0/24 (for the set_fib test).
const EXTRA_ROUTE_YAML: &str = "\
lcores:
  main: 0
  workers: [1]
ports:
  - name: client
    device: net_af_packet0,iface=fgc0
    addresses:
      - 10.0.1.1/24
    mtu: 1500
  - name: server
    device: net_af_packet1,iface=fgs0
    addresses:
      - 198.51.100.1/24
    mtu: 1500
routes:
  - prefix: 203.0.113.0/24
    port: server
    via: 198.51.100.254
    mtu: 1280
  - prefix: 192.0.2.0/24
    port: server
    via: 198.51.100.254
";

/// BASE_YAML plus an exception (tap) port as port 2.
const EXCEPTION_YAML: &str = "\
lcores:
  main: 0
  workers: [1]
ports:
  - name: client
    device: net_af_packet0,iface=fgc0
    addresses:
      - 10.0.1.1/24
    mtu: 1500
  - name: server
    device: net_af_packet1,iface=fgs0
    addresses:
      - 198.51.100.1/24
    mtu: 1500
  - name: kernel
    device: net_tap0,iface=fgx0
    role: exception
exception:
  port: kernel
routes:
  - prefix: 203.0.113.0/24
    port: server
    via: 198.51.100.254
    mtu: 1280
";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn build_fib(yaml: &str, generation: u64) -> Arc<Fib> {
    let cfg = match config::parse_str(yaml, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("test config rejected: {e}"),
    };
    let n = cfg.ports.len();
    let ids: Vec<u16> = (0..n as u16).collect();
    let macs = [MAC0, MAC1, MAC2];
    Arc::new(Fib::build(&cfg, &ids, &macs[..n], generation))
}

// ---------------------------------------------------------------------------
// Test output and harness
// ---------------------------------------------------------------------------

/// Records every transmitted frame and counts discarded buffers.
#[derive(Default)]
struct Rec {
    tx: Vec<(u16, Vec<u8>)>,
    discards: usize,
}

impl Output<VecBuf> for Rec {
    fn tx(&mut self, port: u16, pkt: VecBuf) {
        self.tx.push((port, pkt.data().to_vec()));
    }
    fn discard(&mut self, _pkt: VecBuf) {
        self.discards += 1;
    }
}

struct Harness {
    p: Pipeline<VecBuf>,
    alloc: VecAlloc,
    out: Rec,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_fib(build_fib(BASE_YAML, 1))
    }

    fn with_fib(fib: Arc<Fib>) -> Self {
        Harness {
            p: Pipeline::new(fib, PipelineParams::for_tests()),
            alloc: VecAlloc::default(),
            out: Rec::default(),
            // Well past 0, so the rate limiters start full.
            now: 10 * SEC,
        }
    }

    fn rx(&mut self, port: u16, frame: &[u8]) {
        self.p.handle(
            VecBuf::from_frame(frame),
            port,
            self.now,
            &mut self.alloc,
            &mut self.out,
        );
    }

    fn take_tx(&mut self) -> Vec<(u16, Vec<u8>)> {
        std::mem::take(&mut self.out.tx)
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.p.counters.drops[r as usize]
    }

    fn total_drops(&self) -> u64 {
        self.p.counters.drops.iter().sum()
    }

    /// Make a neighbor known through the data path: its ARP reply to us, then the
    /// worker's after-burst release. Leaves the output and `learned` empty.
    fn resolve(&mut self, port: u16, addr: Ipv4Addr, mac: MacAddr) {
        let (our_mac, our_ip) = match port {
            0 => (MAC0, ip("10.0.1.1")),
            _ => (MAC1, ip("198.51.100.1")),
        };
        let f = arp_frame(our_mac, mac, arp::ARP_REPLY, mac, addr, our_mac, our_ip);
        self.rx(port, &f);
        assert_eq!(self.p.neighbors.lookup_quiet(port, addr), Some(mac));
        self.p
            .release_learned(self.now, &mut self.alloc, &mut self.out);
        self.p.learned.clear();
        self.out = Rec::default();
    }

    /// Assert the pipeline dropped the last packet(s) for `reason` only: nothing sent,
    /// exactly `n` buffers discarded and no other drop reason counted.
    fn assert_only_drop(&self, reason: DropReason, n: u64) {
        assert!(
            self.out.tx.is_empty(),
            "{reason:?}: a frame was transmitted: {:?}",
            self.out.tx
        );
        assert_eq!(self.out.discards as u64, n, "{reason:?}: discards");
        for &r in DropReason::ALL {
            let want = if r == reason { n } else { 0 };
            assert_eq!(
                self.drops(r),
                want,
                "expected only {reason:?}; counter {r:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Frame builders
// ---------------------------------------------------------------------------

fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; ETH + payload.len()];
    {
        let mut e = EthernetFrame::new_unchecked(&mut v[..]);
        e.set_dst_addr(dst);
        e.set_src_addr(src);
        e.set_ethertype(ethertype);
    }
    v[ETH..].copy_from_slice(payload);
    v
}

/// An ARP frame padded to the 60-byte Ethernet minimum.
fn arp_frame(
    dst: MacAddr,
    src: MacAddr,
    op: u16,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut body = vec![0u8; 46];
    {
        let mut a = ArpPacket::new_unchecked(&mut body[..]);
        a.fill_header();
        a.set_operation(op);
        a.set_sender_hw_addr(sha);
        a.set_sender_ip(spa);
        a.set_target_hw_addr(tha);
        a.set_target_ip(tpa);
    }
    eth(dst, src, EtherType::ARP, &body)
}

/// who-has `tpa` tell `spa`, broadcast.
fn arp_request(src: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        MacAddr::BROADCAST,
        src,
        arp::ARP_REQUEST,
        src,
        spa,
        MacAddr::ZERO,
        tpa,
    )
}

/// An IPv4 packet (no options, ident 0x4242) with a valid header checksum.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, df: bool, l4: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 20 + l4.len()];
    v[20..].copy_from_slice(l4);
    let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
    p.set_version_ihl(5);
    p.set_total_len((20 + l4.len()) as u16);
    p.set_ident(0x4242);
    p.set_flags_frag(df, false, 0);
    p.set_ttl(ttl);
    p.set_protocol(proto);
    p.set_src_addr(src);
    p.set_dst_addr(dst);
    p.fill_checksum();
    v
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8 + payload.len()];
    v[8..].copy_from_slice(payload);
    let mut u = UdpPacket::new_unchecked(&mut v[..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len((8 + payload.len()) as u16);
    u.fill_checksum(src, dst);
    v
}

/// A TCP segment; `options` must be a multiple of 4 bytes.
fn tcp(src: Ipv4Addr, dst: Ipv4Addr, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let hl = 20 + options.len();
    let mut v = vec![0u8; hl + payload.len()];
    v[20..hl].copy_from_slice(options);
    v[hl..].copy_from_slice(payload);
    let mut t = TcpPacket::new_unchecked(&mut v[..]);
    t.set_src_port(40000);
    t.set_dst_port(443);
    t.set_seq_number(0x0102_0304);
    t.set_header_len(hl);
    t.set_flags(flags);
    t.set_window(65535);
    t.fill_checksum(src, dst);
    v
}

/// MSS 8960, NOP, window scale 7, SACK permitted, EOL padding (12 bytes).
const SYN_OPTS_MSS_8960: [u8; 12] = [2, 4, 0x23, 0x00, 1, 3, 3, 7, 4, 2, 0, 0];

fn icmp_echo(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8 + payload.len()];
    v[8..].copy_from_slice(payload);
    let mut i = IcmpPacket::new_unchecked(&mut v[..]);
    i.set_msg_type(IcmpPacket::<&[u8]>::ECHO_REQUEST);
    i.set_msg_code(0);
    i.set_echo_ident(ident);
    i.set_echo_seq(seq);
    i.fill_checksum();
    v
}

/// Ethernet to port 0 from the client, carrying `ip_pkt`.
fn from_client(ip_pkt: &[u8]) -> Vec<u8> {
    eth(MAC0, CLIENT_MAC, EtherType::IPV4, ip_pkt)
}

/// A UDP datagram 10.0.1.2:5000 -> dst:53 with `n` payload bytes (pattern), as a frame
/// arriving on port 0.
fn client_udp(dst: Ipv4Addr, ttl: u8, df: bool, n: usize) -> Vec<u8> {
    let src = ip("10.0.1.2");
    let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
    from_client(&ipv4(
        src,
        dst,
        IPPROTO_UDP,
        ttl,
        df,
        &udp(src, dst, 5000, 53, &payload),
    ))
}

// ---------------------------------------------------------------------------
// Frame checks
// ---------------------------------------------------------------------------

fn eth_of(f: &[u8]) -> EthernetFrame<&[u8]> {
    EthernetFrame::new_checked(f).expect("ethernet header")
}

/// The IPv4 packet of a frame, checked: valid header, valid checksum, and the frame
/// is exactly Ethernet + total length.
fn ip_of(f: &[u8]) -> Ipv4Packet<&[u8]> {
    assert_eq!(eth_of(f).ethertype(), EtherType::IPV4);
    let p = Ipv4Packet::new_checked(&f[ETH..]).expect("valid IPv4 header");
    assert!(p.verify_checksum(), "IPv4 header checksum");
    assert_eq!(f.len(), ETH + p.total_len() as usize, "frame length");
    p
}

/// Check `f` is an ICMP error `t`/`code` from `src` to `dst` quoting `orig` (an
/// Ethernet frame as sent to us): the original IP header plus 8 bytes. Returns the
/// rest-of-header word.
fn check_icmp_error(f: &[u8], t: u8, code: u8, src: Ipv4Addr, dst: Ipv4Addr, orig: &[u8]) -> u32 {
    let p = ip_of(f);
    assert_eq!(p.protocol(), IPPROTO_ICMP);
    assert_eq!(p.src_addr(), src);
    assert_eq!(p.dst_addr(), dst);
    assert_eq!(p.ttl(), 64);
    assert!(!p.is_fragment());
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    assert_eq!(icmp.msg_type(), t);
    assert_eq!(icmp.msg_code(), code);
    assert!(icmp.is_error());
    assert_eq!(
        icmp.data(),
        &orig[ETH..ETH + 20 + 8],
        "quote: IP header + 8"
    );
    let q = Ipv4Packet::new_quoted(icmp.data()).unwrap();
    assert_eq!(
        q.dst_addr(),
        Ipv4Packet::new_unchecked(&orig[ETH..]).dst_addr()
    );
    icmp.rest_of_header()
}

fn is_our_arp_request(port: u16, f: &[u8], target: Ipv4Addr) -> bool {
    let (mac, our_ip) = match port {
        0 => (MAC0, ip("10.0.1.1")),
        _ => (MAC1, ip("198.51.100.1")),
    };
    let e = eth_of(f);
    if e.ethertype() != EtherType::ARP {
        return false;
    }
    let a = ArpPacket::new_checked(&f[ETH..]).expect("valid ARP");
    e.dst_addr() == MacAddr::BROADCAST
        && e.src_addr() == mac
        && a.operation() == arp::ARP_REQUEST
        && a.sender_hw_addr() == mac
        && a.sender_ip() == our_ip
        && a.target_hw_addr() == MacAddr::ZERO
        && a.target_ip() == target
}

// ---------------------------------------------------------------------------
// ARP
// ---------------------------------------------------------------------------

#[test]
fn arp_request_for_our_address_is_answered_and_sender_learned() {
    let mut h = Harness::new();
    let req = arp_request(CLIENT_MAC, ip("10.0.1.2"), ip("10.0.1.1"));
    h.rx(0, &req);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    let (port, f) = &tx[0];
    assert_eq!(*port, 0);
    assert_eq!(f.len(), 60, "the reply keeps the request's padded size");
    let e = eth_of(f);
    assert_eq!(e.dst_addr(), CLIENT_MAC);
    assert_eq!(e.src_addr(), MAC0);
    assert_eq!(e.ethertype(), EtherType::ARP);
    let a = ArpPacket::new_checked(&f[ETH..]).unwrap();
    assert_eq!(a.operation(), arp::ARP_REPLY);
    assert_eq!(a.sender_hw_addr(), MAC0);
    assert_eq!(a.sender_ip(), ip("10.0.1.1"));
    assert_eq!(a.target_hw_addr(), CLIENT_MAC);
    assert_eq!(a.target_ip(), ip("10.0.1.2"));

    assert_eq!(h.p.learned, vec![(0, ip("10.0.1.2"), CLIENT_MAC)]);
    assert_eq!(
        h.p.neighbors.lookup_quiet(0, ip("10.0.1.2")),
        Some(CLIENT_MAC)
    );
    assert_eq!(h.p.counters.events.arp_replies_sent, 1);
    assert_eq!(h.p.counters.events.rx_packets, 1);
    assert_eq!(h.out.discards, 0);
    assert_eq!(h.total_drops(), 0);

    // Asking again with the same MAC answers again but learns nothing new.
    h.rx(0, &req);
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.p.learned.len(), 1);
    assert_eq!(h.p.counters.events.arp_replies_sent, 2);
}

#[test]
fn arp_for_an_address_not_ours_is_dropped() {
    let mut h = Harness::new();
    h.rx(0, &arp_request(CLIENT_MAC, ip("10.0.1.2"), ip("10.0.1.77")));
    h.assert_only_drop(DropReason::ArpNotForUs, 1);
    assert!(
        h.p.learned.is_empty(),
        "a request not for us teaches nothing"
    );
    assert_eq!(h.p.counters.events.arp_replies_sent, 0);
}

#[test]
fn arp_for_our_address_on_the_other_port_is_not_for_us() {
    let mut h = Harness::new();
    // 10.0.1.1 is ours, but on port 0, not on port 1 where the request came in.
    h.rx(
        1,
        &arp_request(SERVER_MAC, ip("198.51.100.2"), ip("10.0.1.1")),
    );
    h.assert_only_drop(DropReason::ArpNotForUs, 1);
}

#[test]
fn malformed_arp_is_dropped() {
    // Truncated: 20 bytes of ARP.
    let mut h = Harness::new();
    let full = arp_request(CLIENT_MAC, ip("10.0.1.2"), ip("10.0.1.1"));
    h.rx(0, &full[..ETH + 20]);
    h.assert_only_drop(DropReason::ArpMalformed, 1);

    // Hardware type not Ethernet.
    let mut h = Harness::new();
    let mut f = full.clone();
    f[ETH + 1] = 6;
    h.rx(0, &f);
    h.assert_only_drop(DropReason::ArpMalformed, 1);

    // Protocol length 16 (not IPv4).
    let mut h = Harness::new();
    let mut f = full;
    f[ETH + 5] = 16;
    h.rx(0, &f);
    h.assert_only_drop(DropReason::ArpMalformed, 1);
    assert!(h.p.learned.is_empty());
}

// ---------------------------------------------------------------------------
// ICMP echo
// ---------------------------------------------------------------------------

#[test]
fn echo_request_to_us_is_answered() {
    let mut h = Harness::new();
    let payload = b"flowgate-ping-payload-0123456789";
    let req = from_client(&ipv4(
        ip("10.0.1.2"),
        ip("10.0.1.1"),
        IPPROTO_ICMP,
        61,
        true,
        &icmp_echo(0xbeef, 7, payload),
    ));
    h.rx(0, &req);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    let (port, f) = &tx[0];
    assert_eq!(*port, 0);
    let e = eth_of(f);
    assert_eq!(e.dst_addr(), CLIENT_MAC);
    assert_eq!(e.src_addr(), MAC0);
    let p = ip_of(f);
    assert_eq!(p.src_addr(), ip("10.0.1.1"));
    assert_eq!(p.dst_addr(), ip("10.0.1.2"));
    assert_eq!(p.protocol(), IPPROTO_ICMP);
    assert_eq!(p.total_len() as usize, req.len() - ETH);
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum of the reply");
    assert_eq!(icmp.msg_type(), IcmpPacket::<&[u8]>::ECHO_REPLY);
    assert_eq!(icmp.msg_code(), 0);
    assert_eq!(icmp.echo_ident(), 0xbeef);
    assert_eq!(icmp.echo_seq(), 7);
    assert_eq!(icmp.data(), payload);

    assert_eq!(h.p.counters.events.icmp_echo_requests, 1);
    assert_eq!(h.p.counters.events.forwarded_packets, 0);
    assert_eq!(h.total_drops(), 0);
    assert_eq!(h.out.discards, 0);
}

#[test]
fn echo_request_to_our_other_address_is_answered_from_it() {
    let mut h = Harness::new();
    let req = from_client(&ipv4(
        ip("10.0.1.2"),
        ip("198.51.100.1"),
        IPPROTO_ICMP,
        64,
        false,
        &icmp_echo(1, 1, b"x"),
    ));
    h.rx(0, &req);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 0, "answered out the port it came in on");
    let p = ip_of(&tx[0].1);
    assert_eq!(p.src_addr(), ip("198.51.100.1"));
    assert_eq!(p.dst_addr(), ip("10.0.1.2"));
    assert!(IcmpPacket::new_checked(p.payload())
        .unwrap()
        .verify_checksum());
}

#[test]
fn echo_with_bad_icmp_checksum_is_dropped() {
    let mut h = Harness::new();
    let mut icmp = icmp_echo(1, 1, b"abcdefgh");
    icmp[2] ^= 0x01;
    h.rx(
        0,
        &from_client(&ipv4(
            ip("10.0.1.2"),
            ip("10.0.1.1"),
            IPPROTO_ICMP,
            64,
            false,
            &icmp,
        )),
    );
    h.assert_only_drop(DropReason::IcmpBadChecksum, 1);
    assert_eq!(h.p.counters.events.icmp_echo_requests, 0);
}

// ---------------------------------------------------------------------------
// Transit, neighbor resolution, hold queue
// ---------------------------------------------------------------------------

#[test]
fn transit_to_unknown_neighbor_arps_holds_and_releases() {
    let mut h = Harness::new();
    let dst = ip("198.51.100.2");
    let pkt = client_udp(dst, 64, true, 100);
    h.rx(0, &pkt);

    // An ARP request out port 1; the packet itself is held.
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1, "only the ARP request goes out");
    assert_eq!(tx[0].0, 1);
    assert!(is_our_arp_request(1, &tx[0].1, dst), "{:?}", tx[0].1);
    assert_eq!(tx[0].1.len(), 60);
    assert_eq!(h.p.counters.events.arp_requests_sent, 1);
    assert_eq!(h.p.counters.events.neighbor_held, 1);
    assert_eq!(h.p.pending.len(), 1);
    assert_eq!(h.out.discards, 0);
    assert_eq!(h.total_drops(), 0);

    // A second packet within the request interval is held without another request.
    h.now += SEC / 10;
    h.rx(0, &pkt);
    assert!(h.take_tx().is_empty(), "ARP requests are rate limited");
    assert_eq!(h.p.counters.events.arp_requests_sent, 1);
    assert_eq!(h.p.pending.len(), 2);

    // The reply comes in on port 1: consumed (not a drop), the sender learned.
    h.now += SEC / 10;
    let reply = arp_frame(
        MAC1,
        SERVER_MAC,
        arp::ARP_REPLY,
        SERVER_MAC,
        dst,
        MAC1,
        ip("198.51.100.1"),
    );
    h.rx(1, &reply);
    assert!(h.out.tx.is_empty());
    assert_eq!(h.out.discards, 1);
    assert_eq!(h.total_drops(), 0, "a consumed ARP reply is not a drop");
    assert_eq!(h.p.learned, vec![(1, dst, SERVER_MAC)]);

    // After the burst, the worker releases what it learned.
    h.p.release_learned(h.now, &mut h.alloc, &mut h.out);
    h.p.learned.clear();
    let tx = h.take_tx();
    assert_eq!(tx.len(), 2, "both held packets go out");
    assert!(h.p.pending.is_empty());
    for (port, f) in &tx {
        assert_eq!(*port, 1);
        let e = eth_of(f);
        assert_eq!(e.dst_addr(), SERVER_MAC);
        assert_eq!(e.src_addr(), MAC1);
        let p = ip_of(f);
        assert_eq!(p.ttl(), 63, "TTL decremented once");
        assert_eq!(p.src_addr(), ip("10.0.1.2"));
        assert_eq!(p.dst_addr(), dst);
        // Everything but the MACs, TTL and header checksum is untouched.
        assert_eq!(f[ETH + 20..], pkt[ETH + 20..]);
        assert_eq!(f[ETH..ETH + 8], pkt[ETH..ETH + 8]);
        assert_eq!(f[ETH + 12..ETH + 20], pkt[ETH + 12..ETH + 20]);
    }
    assert_eq!(h.p.counters.events.forwarded_packets, 2);

    // Subsequent packets go straight out.
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 1);
    assert_eq!(eth_of(&tx[0].1).dst_addr(), SERVER_MAC);
    assert_eq!(ip_of(&tx[0].1).ttl(), 63);
    assert_eq!(h.p.counters.events.forwarded_packets, 3);
    assert_eq!(h.p.counters.events.arp_requests_sent, 1);
    assert_eq!(h.p.counters.events.neighbor_held, 2);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn neighbor_resolved_from_the_control_thread_releases_held_packets() {
    let mut h = Harness::new();
    let pkt = client_udp(ip("203.0.113.9"), 10, false, 40);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert!(
        is_our_arp_request(1, &tx[0].1, ip("198.51.100.254")),
        "resolves the route's gateway, not the destination"
    );
    assert_eq!(h.p.pending.len(), 1);

    // Another worker learned it; the control thread tells this one.
    h.p.neighbor_resolved(
        1,
        ip("198.51.100.254"),
        GW_MAC,
        h.now,
        &mut h.alloc,
        &mut h.out,
    );
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 1);
    assert_eq!(eth_of(&tx[0].1).dst_addr(), GW_MAC);
    assert_eq!(eth_of(&tx[0].1).src_addr(), MAC1);
    assert_eq!(ip_of(&tx[0].1).ttl(), 9);
    assert!(h.p.pending.is_empty());
}

#[test]
fn release_only_sends_packets_for_the_resolved_next_hop() {
    let mut h = Harness::new();
    h.rx(0, &client_udp(ip("198.51.100.2"), 64, false, 10));
    h.rx(0, &client_udp(ip("198.51.100.3"), 64, false, 10));
    assert_eq!(h.take_tx().len(), 2, "one ARP request per next hop");
    assert_eq!(h.p.pending.len(), 2);
    h.p.neighbor_resolved(
        1,
        ip("198.51.100.3"),
        SERVER_MAC,
        h.now,
        &mut h.alloc,
        &mut h.out,
    );
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(ip_of(&tx[0].1).dst_addr(), ip("198.51.100.3"));
    assert_eq!(h.p.pending.len(), 1);
}

#[test]
fn held_packet_expires_after_3s_as_neighbor_unresolved() {
    let mut h = Harness::new();
    let t0 = h.now;
    h.rx(0, &client_udp(ip("198.51.100.2"), 64, false, 10));
    assert_eq!(h.take_tx().len(), 1, "ARP request");
    assert_eq!(h.p.pending.len(), 1);

    h.p.poll_timers(t0 + 2 * SEC, &mut h.out);
    assert_eq!(h.p.pending.len(), 1, "still within 3 s");
    assert_eq!(h.out.discards, 0);

    h.p.poll_timers(t0 + 3 * SEC + SEC / 10, &mut h.out);
    assert!(h.p.pending.is_empty());
    h.assert_only_drop(DropReason::NeighborUnresolved, 1);
    assert_eq!(h.p.counters.events.forwarded_packets, 0);

    // A late reply releases nothing.
    h.now = t0 + 4 * SEC;
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    assert_eq!(h.p.counters.events.forwarded_packets, 0);
}

#[test]
fn full_pending_queue_drops_as_neighbor_unresolved() {
    let mut h = Harness::new();
    let max = h.p.params().pending_max;
    let pkt = client_udp(ip("198.51.100.2"), 64, false, 10);
    for _ in 0..max {
        h.rx(0, &pkt);
    }
    assert_eq!(h.p.pending.len(), max);
    assert_eq!(h.take_tx().len(), 1, "a single ARP request");
    assert_eq!(h.out.discards, 0);
    h.rx(0, &pkt);
    h.assert_only_drop(DropReason::NeighborUnresolved, 1);
    assert_eq!(h.p.pending.len(), max);
    assert_eq!(h.p.counters.events.neighbor_held, max as u64);

    // Shutdown frees everything still held.
    h.p.shutdown(&mut h.out);
    assert!(h.p.pending.is_empty());
    assert_eq!(h.out.discards, max + 1);
}

#[test]
fn stale_neighbor_is_used_and_refreshed() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    // Past the 300 s neighbor timeout.
    h.now += 301 * SEC;
    h.rx(0, &client_udp(ip("198.51.100.2"), 64, false, 10));
    let tx = h.take_tx();
    assert_eq!(tx.len(), 2, "a refresh ARP request and the packet: {tx:?}");
    assert!(tx
        .iter()
        .any(|(p, f)| *p == 1 && is_our_arp_request(1, f, ip("198.51.100.2"))));
    let data: Vec<_> = tx
        .iter()
        .filter(|(_, f)| eth_of(f).ethertype() == EtherType::IPV4)
        .collect();
    assert_eq!(data.len(), 1);
    assert_eq!(eth_of(&data[0].1).dst_addr(), SERVER_MAC);
    assert!(h.p.pending.is_empty());
}

// ---------------------------------------------------------------------------
// ICMP errors
// ---------------------------------------------------------------------------

#[test]
fn ttl_1_transit_gets_time_exceeded() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    let pkt = client_udp(ip("198.51.100.2"), 1, false, 64);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    let (port, f) = &tx[0];
    assert_eq!(*port, 0);
    let e = eth_of(f);
    assert_eq!(e.dst_addr(), CLIENT_MAC);
    assert_eq!(e.src_addr(), MAC0);
    assert_eq!(f.len(), ETH + 20 + 8 + 28);
    let rest = check_icmp_error(f, 11, 0, ip("10.0.1.1"), ip("10.0.1.2"), &pkt);
    assert_eq!(rest, 0);
    assert_eq!(h.drops(DropReason::TtlExceeded), 1);
    assert_eq!(h.total_drops(), 1);
    assert_eq!(h.p.counters.events.icmp_time_exceeded_sent, 1);
    assert_eq!(h.p.counters.events.forwarded_packets, 0);
    assert_eq!(h.out.discards, 0);
}

#[test]
fn ttl_0_transit_gets_time_exceeded() {
    let mut h = Harness::new();
    let pkt = client_udp(ip("198.51.100.2"), 0, false, 4);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    check_icmp_error(&tx[0].1, 11, 0, ip("10.0.1.1"), ip("10.0.1.2"), &pkt);
    assert_eq!(h.drops(DropReason::TtlExceeded), 1);
    assert_eq!(h.p.counters.events.arp_requests_sent, 0);
}

#[test]
fn icmp_errors_are_never_sent_about_icmp_errors() {
    let mut h = Harness::new();
    // A time-exceeded message (quoting something) with TTL 1, in transit.
    let quoted = ipv4(
        ip("198.51.100.2"),
        ip("10.0.1.9"),
        IPPROTO_UDP,
        1,
        false,
        &[0u8; 8],
    );
    let mut err = vec![11u8, 0, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&quoted);
    IcmpPacket::new_unchecked(&mut err[..]).fill_checksum();
    h.rx(
        0,
        &from_client(&ipv4(
            ip("10.0.1.2"),
            ip("198.51.100.2"),
            IPPROTO_ICMP,
            1,
            false,
            &err,
        )),
    );
    h.assert_only_drop(DropReason::TtlExceeded, 1);
    assert_eq!(h.p.counters.events.icmp_time_exceeded_sent, 0);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut h = Harness::new();
    let pkt = client_udp(ip("198.51.100.2"), 1, false, 4);
    // The bucket holds min(1000, 100) tokens; all packets arrive at the same instant.
    for _ in 0..101 {
        h.rx(0, &pkt);
    }
    assert_eq!(h.take_tx().len(), 100);
    assert_eq!(h.p.counters.events.icmp_time_exceeded_sent, 100);
    assert_eq!(h.drops(DropReason::TtlExceeded), 101);
    assert_eq!(h.drops(DropReason::IcmpRateLimited), 1);
    assert_eq!(h.out.discards, 1);
    // A millisecond later one token (1000/s) is back.
    h.now += SEC / 1000;
    h.rx(0, &pkt);
    assert_eq!(h.take_tx().len(), 1);
}

#[test]
fn df_packet_over_route_mtu_gets_frag_needed() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.254"), GW_MAC);
    // 20 + 8 + 1272 = 1300 bytes of IP.
    let pkt = client_udp(ip("203.0.113.5"), 64, true, 1272);
    assert_eq!(pkt.len(), ETH + 1300);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    let (port, f) = &tx[0];
    assert_eq!(*port, 0);
    assert_eq!(eth_of(f).dst_addr(), CLIENT_MAC);
    assert_eq!(eth_of(f).src_addr(), MAC0);
    let rest = check_icmp_error(f, 3, 4, ip("10.0.1.1"), ip("10.0.1.2"), &pkt);
    assert_eq!(rest, 1280, "unused 16 bits zero, next-hop MTU 1280");
    let p = ip_of(f);
    let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
    assert_eq!(icmp.next_hop_mtu(), 1280);
    // The quoted header is the one the sender sent (TTL not decremented).
    assert_eq!(Ipv4Packet::new_quoted(icmp.data()).unwrap().ttl(), 64);

    assert_eq!(h.drops(DropReason::FragNeeded), 1);
    assert_eq!(h.total_drops(), 1);
    assert_eq!(h.p.counters.events.icmp_frag_needed_sent, 1);
    assert_eq!(h.p.counters.events.forwarded_packets, 0);
    assert_eq!(h.p.counters.events.fragments_created, 0);
}

#[test]
fn df_packet_exactly_route_mtu_is_forwarded_whole() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.254"), GW_MAC);
    let pkt = client_udp(ip("203.0.113.5"), 64, true, 1280 - 28);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 1);
    assert_eq!(ip_of(&tx[0].1).total_len(), 1280);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn df_clear_packet_over_route_mtu_is_fragmented() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.254"), GW_MAC);
    let pkt = client_udp(ip("203.0.113.5"), 64, false, 1272);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert!(tx.len() >= 2, "fragmented: {} frames", tx.len());
    let orig = Ipv4Packet::new_checked(&pkt[ETH..]).unwrap();
    let mut data = Vec::new();
    for (i, (port, f)) in tx.iter().enumerate() {
        assert_eq!(*port, 1);
        let e = eth_of(f);
        assert_eq!(e.dst_addr(), GW_MAC);
        assert_eq!(e.src_addr(), MAC1);
        let p = ip_of(f);
        assert!(p.total_len() <= 1280, "fragment {i}: {}", p.total_len());
        assert_eq!(p.ident(), orig.ident());
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.src_addr(), orig.src_addr());
        assert_eq!(p.dst_addr(), orig.dst_addr());
        assert_eq!(p.protocol(), IPPROTO_UDP);
        assert_eq!(p.frag_offset() as usize, data.len(), "fragment {i} offset");
        let last = i == tx.len() - 1;
        assert_eq!(p.more_frags(), !last, "fragment {i} MF");
        if !last {
            assert_eq!(p.payload().len() % 8, 0);
        }
        data.extend_from_slice(p.payload());
    }
    assert_eq!(data, orig.payload(), "fragments reassemble to the original");
    assert_eq!(
        h.p.counters.events.fragments_created,
        tx.len() as u64,
        "fragments_created"
    );
    assert_eq!(h.p.counters.events.forwarded_packets, 1);
    assert_eq!(h.out.discards, 1, "the original buffer is freed");
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn held_packet_over_mtu_is_fragmented_on_release() {
    let mut h = Harness::new();
    // (Within the 1500-byte MTU of the receiving port: larger frames are oversize.)
    let pkt = client_udp(ip("203.0.113.5"), 64, false, 1400);
    h.rx(0, &pkt);
    assert_eq!(h.take_tx().len(), 1, "ARP request for the gateway");
    assert_eq!(h.p.pending.len(), 1);
    h.resolve_keep_output(1, ip("198.51.100.254"), GW_MAC);
    let frags: Vec<_> = h.take_tx();
    assert_eq!(frags.len(), 2, "1408 bytes of UDP in 1256-byte pieces");
    let mut total = 0;
    for (port, f) in &frags {
        assert_eq!(*port, 1);
        let p = ip_of(f);
        assert!(p.total_len() <= 1280);
        total += p.payload().len();
    }
    assert_eq!(total, 1408);
    assert_eq!(h.p.counters.events.fragments_created, 2);
}

impl Harness {
    /// Like `resolve`, but keeps what the release transmitted.
    fn resolve_keep_output(&mut self, port: u16, addr: Ipv4Addr, mac: MacAddr) {
        let f = arp_frame(
            MAC1,
            mac,
            arp::ARP_REPLY,
            mac,
            addr,
            MAC1,
            ip("198.51.100.1"),
        );
        self.rx(port, &f);
        self.p
            .release_learned(self.now, &mut self.alloc, &mut self.out);
        self.p.learned.clear();
    }
}

// ---------------------------------------------------------------------------
// TCP MSS clamping
// ---------------------------------------------------------------------------

#[test]
fn syn_mss_is_clamped_to_route_mtu() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.254"), GW_MAC);
    let (src, dst) = (ip("10.0.1.2"), ip("203.0.113.5"));
    let seg = tcp(src, dst, TcpPacket::<&[u8]>::SYN, &SYN_OPTS_MSS_8960, &[]);
    assert!(TcpPacket::new_checked(&seg[..])
        .unwrap()
        .verify_checksum(src, dst));
    h.rx(
        0,
        &from_client(&ipv4(src, dst, IPPROTO_TCP, 64, true, &seg)),
    );
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 1);
    let p = ip_of(&tx[0].1);
    let t = TcpPacket::new_checked(p.payload()).unwrap();
    assert_eq!(t.mss_option(), Some((20, 1240)), "MSS clamped to 1280 - 40");
    assert!(t.verify_checksum(src, dst), "TCP checksum after the clamp");
    // Nothing else in the options moved.
    assert_eq!(&t.options()[4..], &SYN_OPTS_MSS_8960[4..]);
}

#[test]
fn syn_mss_is_clamped_to_port_mtu_and_small_mss_left_alone() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    let (src, dst) = (ip("10.0.1.2"), ip("198.51.100.2"));
    let syn = TcpPacket::<&[u8]>::SYN;
    let seg = tcp(src, dst, syn, &SYN_OPTS_MSS_8960, &[]);
    h.rx(
        0,
        &from_client(&ipv4(src, dst, IPPROTO_TCP, 64, true, &seg)),
    );
    let tx = h.take_tx();
    let p = ip_of(&tx[0].1);
    let t = TcpPacket::new_checked(p.payload()).unwrap();
    assert_eq!(t.mss_option(), Some((20, 1460)));
    assert!(t.verify_checksum(src, dst));

    // MSS 536 fits: untouched.
    let opts = [2u8, 4, 0x02, 0x18];
    let seg = tcp(src, dst, syn, &opts, &[]);
    h.rx(
        0,
        &from_client(&ipv4(src, dst, IPPROTO_TCP, 64, true, &seg)),
    );
    let tx = h.take_tx();
    let p = ip_of(&tx[0].1);
    assert_eq!(p.payload(), &seg[..]);

    // Not a SYN: the option (if any) is not looked at.
    let ack = TcpPacket::<&[u8]>::ACK;
    let seg = tcp(src, dst, ack, &SYN_OPTS_MSS_8960, b"data");
    h.rx(
        0,
        &from_client(&ipv4(src, dst, IPPROTO_TCP, 64, true, &seg)),
    );
    let tx = h.take_tx();
    assert_eq!(ip_of(&tx[0].1).payload(), &seg[..]);
}

// ---------------------------------------------------------------------------
// Validation: the malformed battery
// ---------------------------------------------------------------------------

/// A valid UDP frame 10.0.1.2 -> 198.51.100.2 to mutate.
fn base_frame() -> Vec<u8> {
    client_udp(ip("198.51.100.2"), 64, false, 16)
}

/// Recompute the IPv4 header checksum of a frame (after a deliberate mutation).
fn refill_ip_checksum(f: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut f[ETH..]).fill_checksum();
}

/// A frame 10.0.1.2 -> 198.51.100.2 with protocol `proto` and the given L4 bytes
/// (used verbatim, checksums not recomputed).
fn proto_frame(proto: u8, l4: &[u8]) -> Vec<u8> {
    from_client(&ipv4(
        ip("10.0.1.2"),
        ip("198.51.100.2"),
        proto,
        64,
        false,
        l4,
    ))
}

#[test]
fn malformed_battery_is_dropped_with_the_right_reason() {
    let (src, dst) = (ip("10.0.1.2"), ip("198.51.100.2"));
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "truncated ethernet",
            base_frame()[..10].to_vec(),
            DropReason::EthTruncated,
        ),
        ("empty frame", Vec::new(), DropReason::EthTruncated),
    ];
    {
        let f = eth(MAC0, CLIENT_MAC, EtherType::IPV6, &[0x60; 60]);
        cases.push(("ipv6", f, DropReason::UnknownEthertype));
    }
    {
        let f = eth(MAC0, CLIENT_MAC, EtherType::VLAN, &base_frame()[12..]);
        cases.push(("vlan tag", f, DropReason::UnknownEthertype));
    }
    cases.push((
        "ipv4 truncated",
        base_frame()[..ETH + 19].to_vec(),
        DropReason::Ipv4Truncated,
    ));
    {
        let mut f = base_frame();
        f[ETH] = 0x65;
        refill_ip_checksum(&mut f);
        cases.push(("bad version", f, DropReason::Ipv4BadVersion));
    }
    {
        let mut f = base_frame();
        f[ETH] = 0x44;
        cases.push(("ihl 4", f, DropReason::Ipv4BadIhl));
    }
    {
        // IHL 15 (60 bytes) in a frame holding 20 + 8 bytes of IP.
        let mut f = client_udp(dst, 64, false, 0);
        f[ETH] = 0x4f;
        cases.push(("ihl past the frame", f, DropReason::Ipv4BadIhl));
    }
    {
        let mut f = base_frame();
        let tl = (f.len() - ETH + 1) as u16;
        f[ETH + 2..ETH + 4].copy_from_slice(&tl.to_be_bytes());
        refill_ip_checksum(&mut f);
        cases.push(("total length past frame", f, DropReason::Ipv4BadTotalLength));
    }
    {
        let mut f = base_frame();
        f[ETH + 2..ETH + 4].copy_from_slice(&19u16.to_be_bytes());
        refill_ip_checksum(&mut f);
        cases.push((
            "total length below header",
            f,
            DropReason::Ipv4BadTotalLength,
        ));
    }
    {
        let mut f = base_frame();
        f[ETH + 10] ^= 0x80;
        cases.push(("bad header checksum", f, DropReason::Ipv4BadChecksum));
    }
    {
        // IHL 6: a 4-byte option (NOP NOP NOP EOL) before the UDP header.
        let l4 = udp(src, dst, 5000, 53, b"opt");
        let mut p = vec![0u8; 24 + l4.len()];
        p[20..24].copy_from_slice(&[1, 1, 1, 0]);
        p[24..].copy_from_slice(&l4);
        let mut v = Ipv4Packet::new_unchecked(&mut p[..]);
        v.set_version_ihl(6);
        v.set_total_len((24 + l4.len()) as u16);
        v.set_ttl(64);
        v.set_protocol(IPPROTO_UDP);
        v.set_src_addr(src);
        v.set_dst_addr(dst);
        v.fill_checksum();
        cases.push(("ip options", from_client(&p), DropReason::Ipv4Options));
    }
    cases.push((
        "truncated tcp",
        proto_frame(IPPROTO_TCP, &[0u8; 19]),
        DropReason::TcpTruncated,
    ));
    {
        let mut seg = tcp(src, dst, TcpPacket::<&[u8]>::ACK, &[], &[]);
        seg[12] = 0x40; // data offset 4 words
        cases.push((
            "tcp offset 4",
            proto_frame(IPPROTO_TCP, &seg),
            DropReason::TcpBadOffset,
        ));
    }
    {
        let mut seg = tcp(src, dst, TcpPacket::<&[u8]>::ACK, &[], &[0; 4]);
        seg[12] = 0x70; // 28 bytes of header in a 24-byte segment
        cases.push((
            "tcp offset past segment",
            proto_frame(IPPROTO_TCP, &seg),
            DropReason::TcpBadOffset,
        ));
    }
    {
        let flags = TcpPacket::<&[u8]>::SYN | TcpPacket::<&[u8]>::FIN;
        let seg = tcp(src, dst, flags, &[], &[]);
        cases.push((
            "syn+fin",
            proto_frame(IPPROTO_TCP, &seg),
            DropReason::TcpIllegalFlags,
        ));
    }
    {
        let flags = TcpPacket::<&[u8]>::SYN | TcpPacket::<&[u8]>::RST;
        let seg = tcp(src, dst, flags, &[], &[]);
        cases.push((
            "syn+rst",
            proto_frame(IPPROTO_TCP, &seg),
            DropReason::TcpIllegalFlags,
        ));
    }
    {
        let seg = tcp(src, dst, 0, &[], &[]);
        cases.push((
            "no flags",
            proto_frame(IPPROTO_TCP, &seg),
            DropReason::TcpIllegalFlags,
        ));
    }
    cases.push((
        "truncated udp",
        proto_frame(IPPROTO_UDP, &[0x13, 0x88, 0, 53, 0, 8, 0]),
        DropReason::UdpTruncated,
    ));
    {
        let mut d = udp(src, dst, 5000, 53, b"abcd");
        d[4..6].copy_from_slice(&100u16.to_be_bytes());
        cases.push((
            "udp length past datagram",
            proto_frame(IPPROTO_UDP, &d),
            DropReason::UdpBadLength,
        ));
    }
    {
        let mut d = udp(src, dst, 5000, 53, b"abcd");
        d[4..6].copy_from_slice(&7u16.to_be_bytes());
        cases.push((
            "udp length below 8",
            proto_frame(IPPROTO_UDP, &d),
            DropReason::UdpBadLength,
        ));
    }
    cases.push((
        "truncated icmp (transit)",
        proto_frame(IPPROTO_ICMP, &[8, 0, 0, 0]),
        DropReason::IcmpTruncated,
    ));
    cases.push((
        "truncated icmp (to us)",
        from_client(&ipv4(
            src,
            ip("10.0.1.1"),
            IPPROTO_ICMP,
            64,
            false,
            &[8, 0, 0, 0, 0, 0, 0],
        )),
        DropReason::IcmpTruncated,
    ));
    {
        let mut f = base_frame();
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        cases.push(("another unicast mac", f, DropReason::NotOurMac));
    }
    {
        let mut f = base_frame();
        f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
        cases.push(("multicast mac", f, DropReason::NotOurMac));
    }
    {
        // Port 1's MAC arriving on port 0.
        let mut f = base_frame();
        f[..6].copy_from_slice(&MAC1.0);
        cases.push(("the other port's mac", f, DropReason::NotOurMac));
    }
    for (name, s, reason) in [
        ("loopback source", "127.0.0.1", DropReason::Ipv4BadSource),
        (
            "broadcast source",
            "255.255.255.255",
            DropReason::Ipv4BadSource,
        ),
        ("multicast source", "224.0.0.1", DropReason::Ipv4BadSource),
        ("unspecified source", "0.0.0.0", DropReason::Ipv4BadSource),
        (
            "our own address as source",
            "10.0.1.1",
            DropReason::SpoofedOwnSource,
        ),
        (
            "our other address as source",
            "198.51.100.1",
            DropReason::SpoofedOwnSource,
        ),
    ] {
        let s = ip(s);
        let f = from_client(&ipv4(
            s,
            dst,
            IPPROTO_UDP,
            64,
            false,
            &udp(s, dst, 1, 2, b"x"),
        ));
        cases.push((name, f, reason));
    }

    for (name, frame, reason) in cases {
        let mut h = Harness::new();
        h.rx(0, &frame);
        assert!(h.out.tx.is_empty(), "{name}: transmitted {:?}", h.out.tx);
        assert_eq!(h.out.discards, 1, "{name}: discards");
        for &r in DropReason::ALL {
            let want = u64::from(r == reason);
            assert_eq!(
                h.drops(r),
                want,
                "{name}: expected only {reason:?}; counter {r:?}"
            );
        }
        assert!(h.p.pending.is_empty(), "{name}: held");
        assert_eq!(h.p.counters.events.arp_requests_sent, 0, "{name}");
        assert_eq!(h.p.counters.events.rx_packets, 1, "{name}");
    }
}

#[test]
fn unknown_rx_port_is_dropped() {
    let mut h = Harness::new();
    h.rx(7, &base_frame());
    h.assert_only_drop(DropReason::NoRoute, 1);
}

#[test]
fn broadcast_mac_ip_frame_is_accepted() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    let mut f = base_frame();
    f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
    h.rx(0, &f);
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.total_drops(), 0);
}

// ---------------------------------------------------------------------------
// Routing decisions
// ---------------------------------------------------------------------------

#[test]
fn no_route_is_dropped() {
    let mut h = Harness::new();
    h.rx(0, &client_udp(ip("192.0.2.1"), 64, false, 8));
    h.assert_only_drop(DropReason::NoRoute, 1);
    assert_eq!(h.p.counters.events.arp_requests_sent, 0);

    let mut h = Harness::new();
    h.rx(0, &client_udp(ip("224.0.0.9"), 64, false, 8));
    h.assert_only_drop(DropReason::NoRoute, 1);
}

#[test]
fn ttl_is_checked_before_the_route_lookup() {
    // docs/architecture.md: TTL check -> DF/MTU check -> stages -> LPM route, so an
    // expiring packet to an unroutable destination still gets its time exceeded.
    let mut h = Harness::new();
    let pkt = client_udp(ip("192.0.2.1"), 1, false, 8);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    check_icmp_error(&tx[0].1, 11, 0, ip("10.0.1.1"), ip("10.0.1.2"), &pkt);
    assert_eq!(h.drops(DropReason::TtlExceeded), 1);
    assert_eq!(h.total_drops(), 1);
}

#[test]
fn to_appliance_without_exception_port() {
    let (src, us) = (ip("10.0.1.2"), ip("10.0.1.1"));
    // TCP (ssh) to us.
    let mut h = Harness::new();
    let seg = tcp(src, us, TcpPacket::<&[u8]>::SYN, &[], &[]);
    h.rx(0, &from_client(&ipv4(src, us, IPPROTO_TCP, 64, true, &seg)));
    h.assert_only_drop(DropReason::NoExceptionPath, 1);

    // UDP to us.
    let mut h = Harness::new();
    h.rx(
        0,
        &from_client(&ipv4(
            src,
            us,
            IPPROTO_UDP,
            64,
            false,
            &udp(src, us, 1, 2, b"x"),
        )),
    );
    h.assert_only_drop(DropReason::NoExceptionPath, 1);

    // ICMP to us that is not an echo request.
    let mut h = Harness::new();
    let mut ts = vec![13u8, 0, 0, 0, 0, 1, 0, 1];
    ts.extend_from_slice(&[0; 12]);
    IcmpPacket::new_unchecked(&mut ts[..]).fill_checksum();
    h.rx(
        0,
        &from_client(&ipv4(src, us, IPPROTO_ICMP, 64, false, &ts)),
    );
    h.assert_only_drop(DropReason::UnsupportedIcmp, 1);

    // Limited and directed broadcast.
    for b in ["255.255.255.255", "10.0.1.255"] {
        let mut h = Harness::new();
        let b = ip(b);
        let mut f = from_client(&ipv4(
            src,
            b,
            IPPROTO_UDP,
            64,
            false,
            &udp(src, b, 68, 67, b"d"),
        ));
        f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
        h.rx(0, &f);
        h.assert_only_drop(DropReason::NoExceptionPath, 1);
    }
}

#[test]
fn ethernet_padding_is_trimmed_when_forwarding() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    // 20 + 8: a UDP datagram without payload, padded to the 60-byte minimum.
    let mut f = client_udp(ip("198.51.100.2"), 64, false, 0);
    assert_eq!(f.len(), ETH + 28);
    f.resize(60, 0xee);
    h.rx(0, &f);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].1.len(), ETH + 28, "padding removed");
    let p = ip_of(&tx[0].1);
    assert_eq!(p.total_len(), 28);
    assert_eq!(p.payload(), &f[ETH + 20..ETH + 28]);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn ethernet_padding_is_trimmed_from_echo_replies() {
    let mut h = Harness::new();
    let mut f = from_client(&ipv4(
        ip("10.0.1.2"),
        ip("10.0.1.1"),
        IPPROTO_ICMP,
        64,
        false,
        &icmp_echo(1, 2, b"ab"),
    ));
    let want = f.len();
    f.resize(60, 0x55);
    h.rx(0, &f);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].1.len(), want);
    let p = ip_of(&tx[0].1);
    assert!(IcmpPacket::new_checked(p.payload())
        .unwrap()
        .verify_checksum());
}

#[test]
fn set_fib_swaps_in_new_routes() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.254"), GW_MAC);
    let pkt = client_udp(ip("192.0.2.1"), 64, false, 8);
    h.rx(0, &pkt);
    assert_eq!(h.drops(DropReason::NoRoute), 1);
    assert!(h.take_tx().is_empty());

    h.p.set_fib(build_fib(EXTRA_ROUTE_YAML, 2));
    assert_eq!(h.p.counters.events.config_updates, 1);
    assert_eq!(h.p.fib.generation, 2);
    h.rx(0, &pkt);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1, "follows the new route");
    assert_eq!(tx[0].0, 1);
    assert_eq!(
        eth_of(&tx[0].1).dst_addr(),
        GW_MAC,
        "via the route's gateway"
    );
    assert_eq!(ip_of(&tx[0].1).dst_addr(), ip("192.0.2.1"));
    assert_eq!(h.drops(DropReason::NoRoute), 1);

    // And back: the route is gone again.
    h.p.set_fib(build_fib(BASE_YAML, 3));
    assert_eq!(h.p.counters.events.config_updates, 2);
    h.rx(0, &pkt);
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::NoRoute), 2);
}

// ---------------------------------------------------------------------------
// Exception port
// ---------------------------------------------------------------------------

#[test]
fn exception_port_carries_appliance_traffic_both_ways() {
    let mut h = Harness::with_fib(build_fib(EXCEPTION_YAML, 1));
    assert_eq!(h.p.fib.exception_port, Some(2));
    let (client, us) = (ip("10.0.1.2"), ip("10.0.1.1"));
    let seg = tcp(client, us, TcpPacket::<&[u8]>::SYN, &[], &[]);
    let syn = from_client(&ipv4(client, us, IPPROTO_TCP, 64, true, &seg));
    h.rx(0, &syn);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 2, "to the kernel");
    let e = eth_of(&tx[0].1);
    assert_eq!(e.src_addr(), MAC2);
    assert_eq!(e.dst_addr(), MacAddr::BROADCAST, "kernel MAC not known yet");
    assert_eq!(tx[0].1[ETH..], syn[ETH..], "IP packet untouched");
    assert_eq!(h.p.counters.events.exception_to_kernel, 1);

    // The kernel answers (source: our own address) through the tap.
    h.resolve(0, client, CLIENT_MAC);
    let ack = tcp(
        us,
        client,
        TcpPacket::<&[u8]>::SYN | TcpPacket::<&[u8]>::ACK,
        &[],
        &[],
    );
    let from_kernel = eth(
        MAC2,
        KERNEL_MAC,
        EtherType::IPV4,
        &ipv4(us, client, IPPROTO_TCP, 64, true, &ack),
    );
    h.rx(2, &from_kernel);
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 0);
    assert_eq!(eth_of(&tx[0].1).dst_addr(), CLIENT_MAC);
    assert_eq!(eth_of(&tx[0].1).src_addr(), MAC0);
    assert_eq!(ip_of(&tx[0].1).ttl(), 64, "originated: no TTL decrement");
    assert_eq!(h.p.counters.events.exception_from_kernel, 1);
    assert_eq!(h.total_drops(), 0);

    // Now the kernel's MAC is known.
    h.rx(0, &syn);
    let tx = h.take_tx();
    assert_eq!(eth_of(&tx[0].1).dst_addr(), KERNEL_MAC);

    // The kernel's ARP requests are answered with the tap's MAC.
    h.rx(2, &arp_request(KERNEL_MAC, us, ip("10.0.1.2")));
    let tx = h.take_tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 2);
    let a = ArpPacket::new_checked(&tx[0].1[ETH..]).unwrap();
    assert_eq!(a.operation(), arp::ARP_REPLY);
    assert_eq!(a.sender_hw_addr(), MAC2);
    assert_eq!(a.sender_ip(), ip("10.0.1.2"));
}

// ---------------------------------------------------------------------------
// Fuzz: random, truncated and bit-flipped frames
// ---------------------------------------------------------------------------

use crate::rng::Rng;

/// Valid frames of every kind the pipeline handles, with their rx port.
fn fuzz_templates() -> Vec<(u16, Vec<u8>)> {
    let (c, s, us0, us1) = (
        ip("10.0.1.2"),
        ip("198.51.100.2"),
        ip("10.0.1.1"),
        ip("198.51.100.1"),
    );
    let far = ip("203.0.113.5");
    let syn = TcpPacket::<&[u8]>::SYN;
    let mut frag = ipv4(c, s, IPPROTO_UDP, 64, false, &udp(c, s, 1, 2, &[7; 64]));
    Ipv4Packet::new_unchecked(&mut frag[..]).set_flags_frag(false, true, 0);
    Ipv4Packet::new_unchecked(&mut frag[..]).fill_checksum();
    let mut later_frag = ipv4(c, s, IPPROTO_TCP, 64, false, &[9; 48]);
    Ipv4Packet::new_unchecked(&mut later_frag[..]).set_flags_frag(false, false, 1480);
    Ipv4Packet::new_unchecked(&mut later_frag[..]).fill_checksum();
    vec![
        (0, arp_request(CLIENT_MAC, c, us0)),
        (1, arp_request(SERVER_MAC, s, us1)),
        (
            1,
            arp_frame(
                MAC1,
                GW_MAC,
                arp::ARP_REPLY,
                GW_MAC,
                ip("198.51.100.254"),
                MAC1,
                us1,
            ),
        ),
        (
            1,
            arp_frame(MAC1, SERVER_MAC, arp::ARP_REPLY, SERVER_MAC, s, MAC1, us1),
        ),
        (
            0,
            from_client(&ipv4(
                c,
                us0,
                IPPROTO_ICMP,
                64,
                false,
                &icmp_echo(1, 2, b"ping"),
            )),
        ),
        (0, client_udp(s, 64, false, 100)),
        (0, client_udp(s, 1, false, 100)),
        (0, client_udp(far, 64, true, 1400)),
        (0, client_udp(far, 64, false, 1400)),
        (0, client_udp(far, 64, false, 3000)),
        (
            0,
            from_client(&ipv4(
                c,
                far,
                IPPROTO_TCP,
                64,
                true,
                &tcp(c, far, syn, &SYN_OPTS_MSS_8960, &[]),
            )),
        ),
        (
            0,
            from_client(&ipv4(
                c,
                us0,
                IPPROTO_TCP,
                64,
                true,
                &tcp(c, us0, syn, &[], &[]),
            )),
        ),
        (
            1,
            eth(
                MAC1,
                SERVER_MAC,
                EtherType::IPV4,
                &ipv4(
                    s,
                    c,
                    IPPROTO_UDP,
                    64,
                    false,
                    &udp(s, c, 53, 5000, b"answer"),
                ),
            ),
        ),
        (0, from_client(&frag)),
        (0, from_client(&later_frag)),
        (0, client_udp(ip("192.0.2.1"), 64, false, 10)),
    ]
}

/// Check a frame the pipeline transmitted is well formed. `ports`: how many ports
/// the topology has (port 2, if any, is the exception port).
fn check_sent_frame(ports: u16, port: u16, f: &[u8]) {
    assert!(port < ports, "sent to port {port}");
    let e = eth_of(f);
    let mac = [MAC0, MAC1, MAC2][port as usize];
    assert_eq!(e.src_addr(), mac, "source MAC of a frame out port {port}");
    match e.ethertype() {
        EtherType::ARP => {
            ArpPacket::new_checked(&f[ETH..]).expect("sent ARP is valid");
        }
        EtherType::IPV4 => {
            let p = ip_of(f);
            let ours = [ip("10.0.1.1"), ip("198.51.100.1")];
            // (The kernel may send anything from our addresses: only without an exception
            // port is every such packet built by the pipeline.)
            if ports == 2 && ours.contains(&p.src_addr()) && p.protocol() == IPPROTO_ICMP {
                let icmp = IcmpPacket::new_checked(p.payload()).expect("our ICMP");
                assert!(icmp.verify_checksum(), "checksum of ICMP we built");
            }
        }
        t => panic!("sent a frame with ethertype {t:#06x}"),
    }
}

/// What a fuzz run saw, beyond the pipeline's counters.
struct FuzzStats {
    released: u64,
    expired: u64,
}

/// Feed `n` mutated frames from `templates` through `h` (whose topology has `ports`
/// ports), checking after every packet that it ended as exactly one of: transmitted
/// (or fragmented), discarded, held; and that held packets are later released,
/// expired or freed at shutdown.
fn fuzz_run(
    h: &mut Harness,
    templates: &[(u16, Vec<u8>)],
    ports: u16,
    seed: u64,
    n: u32,
) -> FuzzStats {
    let mut rng = Rng::new(seed);
    // Outcomes of handle(): data frames sent, buffers discarded, packets held.
    let (mut sent, mut discarded, mut held) = (0u64, 0u64, 0u64);
    // What happened to held packets later.
    let (mut released, mut expired) = (0u64, 0u64);
    let mut arp_requests = 0u64;

    for i in 0..n {
        let (tport, base) = &templates[rng.below(templates.len())];
        let mut port = *tport;
        let mut f = base.clone();
        match rng.below(9) {
            0 => {}
            1 => f.truncate(rng.below(f.len() + 1)),
            2 => {
                for _ in 0..1 + rng.below(8) {
                    let bit = rng.below(f.len() * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                }
            }
            3 => {
                // Random bytes over a header region.
                let at = rng.below(f.len().min(60));
                let n = 1 + rng.below(6);
                for b in f.iter_mut().skip(at).take(n) {
                    *b = rng.u8();
                }
            }
            4 => {
                let n = rng.below(130);
                f = (0..n).map(|_| rng.u8()).collect();
                if n >= 14 && rng.below(2) == 0 {
                    f[..6].copy_from_slice(&[MAC0, MAC1, MAC2][port as usize].0);
                    let et = [EtherType::IPV4, EtherType::ARP][rng.below(2)];
                    f[12..14].copy_from_slice(&et.to_be_bytes());
                    if et == EtherType::IPV4 && n >= 34 {
                        f[14] = 0x45;
                        refill_ip_checksum(&mut f);
                    }
                }
            }
            5 | 6 => {
                // Bit flips past the IP header checksum check: fix it up afterwards.
                if f.len() >= ETH + 20 && eth_of(&f).ethertype() == EtherType::IPV4 {
                    for _ in 0..1 + rng.below(4) {
                        let bit = rng.below((f.len() - ETH) * 8);
                        f[ETH + bit / 8] ^= 1 << (bit % 8);
                    }
                    if f[ETH] & 0x0f == 5 {
                        refill_ip_checksum(&mut f);
                    }
                }
            }
            7 => {
                let n = rng.below(64);
                f.extend((0..n).map(|_| rng.u8()));
            }
            _ => {
                // Another host on the far side: many neighbors, a filling hold queue.
                if f.len() >= ETH + 20 && eth_of(&f).ethertype() == EtherType::IPV4 {
                    let last = rng.u8();
                    f[ETH + 19] = last;
                    if rng.below(2) == 0 {
                        f[ETH + 18] = rng.u8();
                    }
                    refill_ip_checksum(&mut f);
                }
            }
        }
        if rng.below(32) == 0 {
            port = rng.below(4) as u16;
        }
        h.now += rng.below(60_000_000) as u64; // up to 60 ms

        let tx0 = h.out.tx.len();
        let disc0 = h.out.discards as u64;
        let pend0 = h.p.pending.len() as u64;
        let arp0 = h.p.counters.events.arp_requests_sent;
        let frag0 = h.p.counters.events.fragments_created;
        let rx0 = h.p.counters.events.rx_packets;

        h.rx(port, &f);

        assert_eq!(h.p.counters.events.rx_packets, rx0 + 1);
        let new_tx = &h.out.tx[tx0..];
        for (p, frame) in new_tx {
            check_sent_frame(ports, *p, frame);
        }
        let d_arp = h.p.counters.events.arp_requests_sent - arp0;
        let d_frag = h.p.counters.events.fragments_created - frag0;
        let arp_frames = new_tx
            .iter()
            .filter(|(p, fr)| {
                let e = eth_of(fr);
                e.ethertype() == EtherType::ARP
                    && e.dst_addr() == MacAddr::BROADCAST
                    && ArpPacket::new_checked(&fr[ETH..]).unwrap().operation() == arp::ARP_REQUEST
                    && *p <= 1
            })
            .count() as u64;
        assert_eq!(
            arp_frames, d_arp,
            "iteration {i}: ARP requests sent vs counted"
        );
        let d_tx = new_tx.len() as u64;
        let d_disc = h.out.discards as u64 - disc0;
        let d_held = h.p.pending.len() as u64 - pend0;
        assert!(d_tx >= d_arp + d_frag, "iteration {i}");
        let data_tx = d_tx - d_arp - d_frag;
        // Fragmented: n fragments sent, the original freed. Otherwise one outcome.
        let outcome = if d_frag > 0 {
            assert_eq!(
                (data_tx, d_disc, d_held),
                (0, 1, 0),
                "iteration {i}: fragmented"
            );
            1
        } else {
            data_tx + d_disc + d_held
        };
        assert_eq!(
            outcome, 1,
            "iteration {i}: input {f:02x?} on port {port} ended as {data_tx} tx + {d_disc} \
             discards + {d_held} held"
        );
        sent += data_tx + u64::from(d_frag > 0);
        discarded += d_disc - u64::from(d_frag > 0);
        held += d_held;
        arp_requests += d_arp;

        // After a burst: release what was learned, as the worker does.
        if i % 16 == 15 {
            let tx0 = h.out.tx.len() as u64;
            let disc0 = h.out.discards as u64;
            let pend0 = h.p.pending.len() as u64;
            let frag0 = h.p.counters.events.fragments_created;
            h.p.release_learned(h.now, &mut h.alloc, &mut h.out);
            h.p.learned.clear();
            for (p, frame) in &h.out.tx[tx0 as usize..] {
                check_sent_frame(ports, *p, frame);
            }
            let out = h.out.tx.len() as u64 - tx0;
            let d_frag = h.p.counters.events.fragments_created - frag0;
            let d_disc = h.out.discards as u64 - disc0;
            let gone = pend0 - h.p.pending.len() as u64;
            // Each released packet is one frame, or n fragments + its freed original.
            assert_eq!(out - d_frag + d_disc, gone, "iteration {i}: release");
            released += gone;
        }
        // Drain timer.
        if i % 64 == 63 {
            let disc0 = h.out.discards as u64;
            let pend0 = h.p.pending.len() as u64;
            let unres0 = h.drops(DropReason::NeighborUnresolved);
            h.p.poll_timers(h.now, &mut h.out);
            let gone = pend0 - h.p.pending.len() as u64;
            assert_eq!(h.out.discards as u64 - disc0, gone);
            assert_eq!(h.drops(DropReason::NeighborUnresolved) - unres0, gone);
            expired += gone;
        }
        // Keep memory bounded.
        if h.out.tx.len() > 4096 {
            h.out.tx.clear();
        }
    }

    let c = h.p.counters.events;
    assert_eq!(c.rx_packets, u64::from(n));
    assert_eq!(
        c.rx_packets,
        sent + discarded + held,
        "rx == tx + discards + held"
    );
    assert_eq!(c.arp_requests_sent, arp_requests);
    assert_eq!(held, c.neighbor_held);
    assert_eq!(held, released + expired + h.p.pending.len() as u64);

    let before = h.out.discards;
    let still_held = h.p.pending.len();
    h.p.shutdown(&mut h.out);
    assert_eq!(h.out.discards - before, still_held);
    assert_eq!(held, released + expired + still_held as u64);
    assert!(h.p.pending.is_empty());
    FuzzStats { released, expired }
}

#[test]
fn fuzz_never_panics_and_accounts_for_every_packet() {
    let mut h = Harness::new();
    let st = fuzz_run(&mut h, &fuzz_templates(), 2, 0x9E37_79B9_7F4A_7C15, 20_000);
    // The fuzzer reached the interesting paths.
    let c = h.p.counters.events;
    assert!(c.forwarded_packets > 0);
    assert!(c.icmp_echo_requests > 0);
    assert!(c.arp_replies_sent > 0);
    assert!(c.icmp_time_exceeded_sent > 0);
    assert!(c.icmp_frag_needed_sent > 0);
    assert!(c.fragments_created > 0);
    assert!(c.neighbor_held > 0);
    assert!(st.released > 0 && st.expired > 0);
    for r in [
        DropReason::EthTruncated,
        DropReason::NotOurMac,
        DropReason::UnknownEthertype,
        DropReason::ArpMalformed,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Truncated,
        DropReason::Ipv4BadIhl,
        DropReason::Ipv4BadTotalLength,
        DropReason::Ipv4BadSource,
        DropReason::NoRoute,
        DropReason::NoExceptionPath,
        DropReason::NeighborUnresolved,
    ] {
        assert!(h.drops(r) > 0, "fuzz never hit {r:?}");
    }
}

#[test]
fn fuzz_with_an_exception_port() {
    let (c, us0, far) = (ip("10.0.1.2"), ip("10.0.1.1"), ip("203.0.113.5"));
    let mut templates = fuzz_templates();
    let from_kernel = |p: Vec<u8>| (2u16, eth(MAC2, KERNEL_MAC, EtherType::IPV4, &p));
    let syn_ack = TcpPacket::<&[u8]>::SYN | TcpPacket::<&[u8]>::ACK;
    templates.extend([
        from_kernel(ipv4(
            us0,
            c,
            IPPROTO_TCP,
            64,
            true,
            &tcp(us0, c, syn_ack, &[], &[]),
        )),
        from_kernel(ipv4(
            us0,
            far,
            IPPROTO_UDP,
            64,
            true,
            &udp(us0, far, 1, 2, &[1; 1400]),
        )),
        from_kernel(ipv4(
            us0,
            far,
            IPPROTO_UDP,
            64,
            false,
            &udp(us0, far, 1, 2, &[1; 1400]),
        )),
        (2, arp_request(KERNEL_MAC, us0, c)),
    ]);
    let mut h = Harness::with_fib(build_fib(EXCEPTION_YAML, 1));
    fuzz_run(&mut h, &templates, 3, 0x1234_5678_9abc_def1, 20_000);
    let c = h.p.counters.events;
    assert!(c.exception_to_kernel > 0);
    assert!(c.exception_from_kernel > 0);
    assert!(c.forwarded_packets > 0);
    assert!(c.fragments_created > 0);
}

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

#[test]

fn directed_broadcast_of_the_egress_subnet_is_not_forwarded() {
    // RFC 2644 (BCP 34): routers MUST NOT forward directed broadcasts by default. The
    // pipeline already refuses 10.0.1.255 arriving on port 0; 198.51.100.255 arriving on
    // port 0 is the directed broadcast of port 1's subnet (the smurf amplifier case).
    let mut h = Harness::new();
    h.rx(0, &client_udp(ip("198.51.100.255"), 64, false, 8));
    let tx = h.take_tx();
    assert!(
        tx.is_empty(),
        "directed broadcast forwarded or ARPed for: {tx:?}"
    );
    assert!(
        h.p.pending.is_empty(),
        "held for ARP resolution of a broadcast address"
    );
    assert_eq!(h.out.discards, 1);
    assert_eq!(h.total_drops(), 1);
}

#[test]

fn arp_requests_stay_rate_limited_when_the_neighbor_table_is_full() {
    let params = PipelineParams {
        neighbor_capacity: 2,
        ..PipelineParams::for_tests()
    };
    let mut h = Harness::with_fib(build_fib(BASE_YAML, 1));
    h.p = Pipeline::new(h.p.fib.clone(), params);
    // Two clients resolve us: the table is full of resolved entries.
    for (host, mac) in [("10.0.1.2", CLIENT_MAC), ("10.0.1.3", SERVER_MAC)] {
        h.rx(0, &arp_request(mac, ip(host), ip("10.0.1.1")));
    }
    assert_eq!(h.p.neighbors.resolved(), 2);
    h.out = Rec::default();
    // Ten packets for a third next hop within a millisecond.
    for _ in 0..10 {
        h.rx(0, &client_udp(ip("198.51.100.2"), 64, false, 8));
        h.now += SEC / 10_000;
    }
    assert_eq!(
        h.p.counters.events.arp_requests_sent, 1,
        "at most one ARP request per next hop per second"
    );
}

#[test]
fn ttl_decrement_keeps_the_header_checksum_valid_for_every_ttl() {
    let mut h = Harness::new();
    h.resolve(1, ip("198.51.100.2"), SERVER_MAC);
    let (src, dst) = (ip("10.0.1.2"), ip("198.51.100.2"));
    let l4 = udp(src, dst, 1, 2, b"");
    for ttl in 2..=255u8 {
        for ident in (0..=0xffffu32).step_by(257) {
            let mut p = ipv4(src, dst, IPPROTO_UDP, ttl, false, &l4);
            let mut v = Ipv4Packet::new_unchecked(&mut p[..]);
            v.set_ident(ident as u16);
            v.fill_checksum();
            h.rx(0, &from_client(&p));
            let (_, f) = h.out.tx.pop().expect("forwarded");
            let q = ip_of(&f);
            assert_eq!(q.ttl(), ttl - 1);
            assert_eq!(q.ident(), ident as u16);
        }
    }
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn echo_reply_checksum_is_valid_for_every_identifier() {
    let mut h = Harness::new();
    let (c, us) = (ip("10.0.1.2"), ip("10.0.1.1"));
    // Sequence 1: the all-zero message (ident 0, seq 0, no data) is the test below.
    for ident in 0..=0xffffu16 {
        let req = from_client(&ipv4(
            c,
            us,
            IPPROTO_ICMP,
            64,
            false,
            &icmp_echo(ident, 1, b""),
        ));
        h.rx(0, &req);
        let (_, f) = h.out.tx.pop().expect("echo reply");
        let p = ip_of(&f);
        let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
        assert!(
            icmp.verify_checksum(),
            "ident {ident:#06x}: {:02x?}",
            p.payload()
        );
        assert_eq!(icmp.echo_ident(), ident);
    }
    assert_eq!(h.p.counters.events.icmp_echo_requests, 0x10000);
}

#[test]

fn echo_reply_to_all_zero_request_has_valid_checksum() {
    let mut h = Harness::new();
    let (c, us) = (ip("10.0.1.2"), ip("10.0.1.1"));
    for data in [&b""[..], &[0u8; 56][..]] {
        let req = icmp_echo(0, 0, data);
        assert!(IcmpPacket::new_checked(&req[..]).unwrap().verify_checksum());
        h.rx(0, &from_client(&ipv4(c, us, IPPROTO_ICMP, 64, false, &req)));
        let (_, f) = h.out.tx.pop().expect("echo reply");
        let p = ip_of(&f);
        let icmp = IcmpPacket::new_checked(p.payload()).unwrap();
        assert_eq!(icmp.msg_type(), 0);
        assert!(
            icmp.verify_checksum(),
            "reply checksum {:#06x} (valid: 0xffff)",
            icmp.checksum()
        );
    }
}

// ---------------------------------------------------------------------------
// Burst processing (parse once, issue 11 item 1)
// ---------------------------------------------------------------------------

/// A UDP datagram 10.0.1.2:`sport` -> dst:53 as a frame arriving on port 0.
fn client_udp_from(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let src = ip("10.0.1.2");
    from_client(&ipv4(
        src,
        dst,
        IPPROTO_UDP,
        64,
        false,
        &udp(src, dst, sport, 53, b"q"),
    ))
}

/// A burst of transit packets, local traffic and a malformed packet: `handle_burst`
/// ends every packet exactly once, sends the transit packets in their order, and
/// transmits the same bytes as `handle` one packet at a time.
#[test]
fn handle_burst_matches_handle_and_keeps_transit_order() {
    let server = ip("198.51.100.2");
    let transit = |sport: u16| client_udp_from(server, sport);
    let echo = from_client(&ipv4(
        ip("10.0.1.2"),
        ip("10.0.1.1"),
        IPPROTO_ICMP,
        64,
        false,
        &icmp_echo(1, 1, b"x"),
    ));
    let mut bad = transit(9);
    bad[ETH + 10] ^= 0xff; // IPv4 header checksum
    let arp = arp_request(CLIENT_MAC, ip("10.0.1.2"), ip("10.0.1.1"));
    let frames = [
        transit(1),
        echo,
        transit(2),
        bad,
        transit(3),
        arp,
        transit(4),
    ];

    let mut one = Harness::new();
    one.resolve(1, server, SERVER_MAC);
    for f in &frames {
        one.rx(0, f);
    }
    let mut burst = Harness::new();
    burst.resolve(1, server, SERVER_MAC);
    // `Burst for Vec` takes from the end: the first packet goes last.
    let mut v: Vec<VecBuf> = frames.iter().rev().map(|f| VecBuf::from_frame(f)).collect();
    burst
        .p
        .handle_burst(&mut v, 0, burst.now, &mut burst.alloc, &mut burst.out);
    assert!(v.is_empty());

    let (a, b) = (one.take_tx(), burst.take_tx());
    assert_eq!(a.len(), 6, "4 transit, the echo reply, the ARP reply");
    let mut sorted_a = a.clone();
    let mut sorted_b = b.clone();
    sorted_a.sort();
    sorted_b.sort();
    assert_eq!(sorted_a, sorted_b, "the same frames leave");
    let sports = |tx: &[(u16, Vec<u8>)]| -> Vec<u16> {
        tx.iter()
            .filter(|(port, _)| *port == 1)
            .map(|(_, f)| u16::from_be_bytes([f[ETH + 20], f[ETH + 21]]))
            .collect()
    };
    assert_eq!(
        sports(&b),
        vec![1, 2, 3, 4],
        "transit packets keep their order"
    );
    assert_eq!(burst.drops(DropReason::Ipv4BadChecksum), 1);
    assert_eq!(burst.out.discards, 1);
    assert_eq!(burst.p.counters.events.rx_packets, frames.len() as u64 + 1);
    assert_eq!(burst.p.counters.events.forwarded_packets, 4);
}

/// More than `BURST_MAX` packets: one call takes `BURST_MAX`, the rest stay for the next.
#[test]
fn handle_burst_takes_at_most_burst_max() {
    let server = ip("198.51.100.2");
    let mut h = Harness::new();
    h.resolve(1, server, SERVER_MAC);
    let mut v: Vec<VecBuf> = (0..40u16)
        .map(|i| VecBuf::from_frame(&client_udp_from(server, 100 + i)))
        .collect();
    h.p.handle_burst(&mut v, 0, h.now, &mut h.alloc, &mut h.out);
    assert_eq!(v.len(), 40 - super::BURST_MAX);
    assert_eq!(h.take_tx().len(), super::BURST_MAX);
    h.p.handle_burst(&mut v, 0, h.now, &mut h.alloc, &mut h.out);
    assert!(v.is_empty());
    assert_eq!(h.take_tx().len(), 40 - super::BURST_MAX);
}
