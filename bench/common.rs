//! Shared by the benchmark binaries (`micro`, `pipeline`): test frames and a forwarding
//! table shaped like the routing test topology.
#![allow(dead_code)]

use flowgate::config;
use flowgate::pipeline::route::Fib;
use flowgate::wire::{EthernetFrame, Ipv4Packet, MacAddr, TcpPacket, UdpPacket};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The appliance's MACs on port 0 ("inside") and port 1 ("outside").
pub const PORT_MAC: [MacAddr; 2] = [
    MacAddr::new(0x02, 0x00, 0x00, 0x00, 0x00, 0x01),
    MacAddr::new(0x02, 0x00, 0x00, 0x00, 0x00, 0x02),
];
/// A client on the inside subnet (sender of the benchmark traffic).
pub const CLIENT_MAC: MacAddr = MacAddr::new(0x02, 0x00, 0x00, 0x0c, 0x00, 0x01);
/// The outside next hop (198.51.100.254), whose MAC the pipeline has resolved.
pub const GATEWAY_MAC: MacAddr = MacAddr::new(0x02, 0x00, 0x00, 0x0e, 0x00, 0x01);
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

/// Two data ports, 10.0.1.0/24 inside and 198.51.100.0/24 outside, a default route to
/// the outside gateway plus a few static routes (so the LPM has 4 prefix lengths in use:
/// /32, /24, /16, /0).
pub const BENCH_YAML: &str = "
eal:
  args: [--no-huge]
lcores:
  main: 0
  workers: [1]
mempool:
  mbufs: 4095
  cache: 256
  data_room: 2176
ports:
  - name: inside
    device: net_null0
    addresses: [10.0.1.1/24]
    mtu: 1500
  - name: outside
    device: net_null1
    addresses: [198.51.100.1/24]
    mtu: 1500
routes:
  - prefix: 0.0.0.0/0
    port: outside
    via: 198.51.100.254
  - prefix: 203.0.0.0/16
    port: outside
    via: 198.51.100.253
  - prefix: 192.0.2.77/32
    port: outside
    via: 198.51.100.252
metrics:
  listen: 127.0.0.1:9199
";

pub fn bench_fib() -> Arc<Fib> {
    let cfg = config::parse_str(BENCH_YAML, "bench.yaml").unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Fib::build(&cfg, &[0, 1], &PORT_MAC, 1))
}

/// The NAT gateway public address (not a port address; the FIB answers ARP for it).
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// `BENCH_YAML` plus one NAT gateway translating 10.0.1.0/24 to `PUBLIC_IP`, with room
/// for `flows` flows per core and the given UDP / transitory-TCP timeouts.
pub fn nat_config(flows: u32, timeout_s: u32) -> config::Config {
    let yaml = format!(
        "{BENCH_YAML}
nat_gateways:
  - id: bench
    inside_prefixes: [10.0.1.0/24]
    public_ips: [{PUBLIC_IP}]
    flows_per_core: {flows}
    timeouts:
      tcp_established_s: {timeout_s}
      tcp_transitory_s: {timeout_s}
      udp_s: {timeout_s}
      icmp_s: {timeout_s}
"
    );
    config::parse_str(&yaml, "bench-nat.yaml").unwrap_or_else(|e| panic!("{e}"))
}

pub const ETH: usize = 14;

/// An Ethernet + IPv4 + TCP (ACK, 20-byte header) frame of `frame_len` bytes (>= 54)
/// from the inside client to `dst`, with valid checksums. `flow` varies the source
/// address (10.0.1.2..) and source port, so distinct flows differ in their 5-tuple.
pub fn tcp_frame(flow: u32, dst: Ipv4Addr, frame_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; frame_len.max(54)];
    let (src, sport) = flow_source(flow);
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(PORT_MAC[0]);
        eth.set_src_addr(CLIENT_MAC);
        eth.set_ethertype(0x0800);
    }
    let ip_len = f.len() - ETH;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
        ip.set_version_ihl(5);
        ip.set_total_len(ip_len as u16);
        ip.set_ident(flow as u16);
        ip.set_flags_frag(true, false, 0);
        ip.set_ttl(64);
        ip.set_protocol(6);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
        tcp.set_src_port(sport);
        tcp.set_dst_port(443);
        tcp.set_seq_number(0x1000_0000 ^ flow);
        tcp.set_ack_number(0x2000_0000);
        tcp.set_header_len(20);
        tcp.set_flags(TcpPacket::<&[u8]>::ACK);
        tcp.set_window(65535);
        tcp.fill_checksum(src, dst);
    }
    f
}

/// As `tcp_frame` with only SYN set (a connection's first packet).
pub fn tcp_syn_frame(flow: u32, dst: Ipv4Addr, frame_len: usize) -> Vec<u8> {
    let mut f = tcp_frame(flow, dst, frame_len);
    let (src, _) = flow_source(flow);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_flags(TcpPacket::<&[u8]>::SYN);
    tcp.set_ack_number(0);
    tcp.fill_checksum(src, dst);
    f
}

/// As `tcp_frame` with UDP.
pub fn udp_frame(flow: u32, dst: Ipv4Addr, frame_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; frame_len.max(42)];
    let (src, sport) = flow_source(flow);
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(PORT_MAC[0]);
        eth.set_src_addr(CLIENT_MAC);
        eth.set_ethertype(0x0800);
    }
    let ip_len = f.len() - ETH;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
        ip.set_version_ihl(5);
        ip.set_total_len(ip_len as u16);
        ip.set_ttl(64);
        ip.set_protocol(17);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
        udp.set_src_port(sport);
        udp.set_dst_port(53);
        udp.set_len((ip_len - 20) as u16);
        udp.fill_checksum(src, dst);
    }
    f
}

/// Flow number -> (inside source address, source port): up to 250 clients x 60000 ports.
pub fn flow_source(flow: u32) -> (Ipv4Addr, u16) {
    let host = 2 + (flow % 250);
    let port = 1024 + ((flow / 250) % 60000) as u16;
    (Ipv4Addr::new(10, 0, 1, host as u8), port)
}

/// A destination on the internet side for flow `flow` (varies over 64k addresses).
pub fn flow_dest(flow: u32) -> Ipv4Addr {
    let x = flow.wrapping_mul(2654435761) >> 16;
    Ipv4Addr::new(93, 184, (x >> 8) as u8, x as u8)
}

/// `n` distinct prefixes shaped like an internet routing table (BGP full tables are
/// ~60 % /24, most of the rest /16../23, a few shorter, a few longer than /24), avoiding
/// the benchmark's own subnets (10/8, 198.51.100/24) and 0/8, 127/8, 224/3.
pub fn internet_routes(n: usize, seed: u64) -> Vec<(Ipv4Addr, u8)> {
    let mut r = Rng(seed | 1);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = match r.below(100) {
            0..=59 => 24,
            60..=89 => 16 + r.below(8) as u8,
            90..=97 => 8 + r.below(8) as u8,
            _ => 25 + r.below(8) as u8,
        };
        let a = public_addr(r.next_u64() as u32) & (u32::MAX << (32 - len as u32));
        let first = a >> 24;
        if first == 10 || first == 198 || seen.contains(&(a, len)) {
            continue;
        }
        seen.insert((a, len));
        out.push((Ipv4Addr::from(a), len));
    }
    out
}

/// `x` with its first octet moved into 1..=223 other than 10, 127 and 198 (a unicast
/// address the pipeline forwards, outside the benchmark's own subnets).
pub fn public_addr(x: u32) -> u32 {
    let mut o = (((x >> 24) * 222) >> 8) + 1;
    if o == 127 || o == 10 || o == 198 {
        o += 1;
    }
    (o << 24) | (x & 0x00ff_ffff)
}

/// Destination of flow `flow` spread over the whole unicast space (route benchmark with
/// a large table: each destination its own tbl24 line).
pub fn spread_dest(flow: u32) -> Ipv4Addr {
    Ipv4Addr::from(public_addr(
        flow.wrapping_mul(2654435761).rotate_left(13) ^ 0x5bd1_e995,
    ))
}

/// A small xorshift generator (deterministic inputs).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}
