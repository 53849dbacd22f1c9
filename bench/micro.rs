//! Criterion microbenchmarks: `cargo bench --bench micro` (add `-- --quick` for a fast run,
//! or a filter such as `-- lpm`).
//!
//! - parse: Ethernet + IPv4 + TCP views with every check the pipeline does on ingress.
//! - checksum: full (IPv4 header, 1460-byte payload) and incremental (RFC 1624) updates.
//! - lpm: longest-prefix match with 4 prefix lengths in use (/32, /24, /16, /0).
//! - pipeline: `Pipeline::handle` on a `VecBuf` for a routed TCP packet whose next hop is
//!   resolved (ns per packet), and the frame refill it includes, to subtract.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowgate::packet::{PacketBuf, VecAlloc, VecBuf};
use flowgate::pipeline::route::Lpm;
use flowgate::pipeline::{Output, Pipeline, PipelineParams};
use flowgate::wire::{checksum, EthernetFrame, Ipv4Packet, TcpPacket};
use std::net::Ipv4Addr;

#[path = "common.rs"]
mod common;
use common::*;

fn parse(c: &mut Criterion) {
    let frame = tcp_frame(7, flow_dest(7), 64);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("eth_ipv4_tcp_checked", |b| {
        b.iter(|| {
            let d = black_box(&frame[..]);
            let eth = EthernetFrame::new_checked(d).unwrap();
            let et = eth.ethertype();
            let ip = Ipv4Packet::new_checked(&d[ETH..]).unwrap();
            let ok = ip.verify_checksum() && !ip.has_options();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            black_box((et, ok, ip.dst_addr(), tcp.src_port(), tcp.flags_legal()))
        })
    });
    g.finish();
}

fn checksums(c: &mut Criterion) {
    let frame = tcp_frame(7, flow_dest(7), 1514);
    let hdr = &frame[ETH..ETH + 20];
    let payload = &frame[ETH + 40..];
    let mut g = c.benchmark_group("checksum");
    g.bench_function("full_ipv4_header_20B", |b| {
        b.iter(|| checksum::checksum(black_box(hdr)))
    });
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("full_payload_1460B", |b| {
        b.iter(|| checksum::checksum(black_box(payload)))
    });
    g.throughput(Throughput::Elements(1));
    // A NAT source rewrite: new address in the IP header checksum, and address + port in
    // the TCP checksum (pseudo header).
    let old = Ipv4Addr::new(10, 0, 1, 7);
    let new = Ipv4Addr::new(203, 0, 113, 9);
    g.bench_function("incremental_snat_addr_port", |b| {
        b.iter(|| {
            let ipc = checksum::update_addr(black_box(0x1c46), old, new);
            let tc = checksum::update_addr(black_box(0xb1e6), old, new);
            let tc = checksum::update16(tc, black_box(40000), black_box(1024));
            black_box((ipc, tc))
        })
    });
    g.bench_function("incremental_ttl", |b| {
        b.iter(|| checksum::update16(black_box(0x1c46), black_box(0x4006), black_box(0x3f06)))
    });
    g.finish();
}

fn lpm(c: &mut Criterion) {
    let mut l: Lpm<u32> = Lpm::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    // 10k /32, 10k /24, 1k /16 and a default route.
    l.insert(Ipv4Addr::UNSPECIFIED, 0, 0);
    for i in 0..1000u32 {
        l.insert(
            Ipv4Addr::from((rng.next_u64() as u32) & 0xffff_0000),
            16,
            16 + i,
        );
    }
    for i in 0..10_000u32 {
        l.insert(
            Ipv4Addr::from((rng.next_u64() as u32) & 0xffff_ff00),
            24,
            24 + i,
        );
    }
    let mut hosts = Vec::new();
    for i in 0..10_000u32 {
        let a = rng.next_u64() as u32;
        l.insert(Ipv4Addr::from(a), 32, 32 + i);
        hosts.push(a);
    }
    // Lookups: a quarter each end at /32, /24 (likely), /16 (likely) and /0.
    let mut addrs = Vec::with_capacity(4096);
    for i in 0..4096usize {
        let a = match i % 4 {
            0 => hosts[i % hosts.len()],
            _ => rng.next_u64() as u32,
        };
        addrs.push(Ipv4Addr::from(a));
    }
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_4_lengths_21k_routes", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(l.lookup(black_box(addrs[i])))
        })
    });
    let hit32 = Ipv4Addr::from(hosts[0]);
    g.bench_function("lookup_hit_32_first_probe", |b| {
        b.iter(|| black_box(l.lookup(black_box(hit32))))
    });
    let miss = Ipv4Addr::new(240, 0, 0, 1);
    g.bench_function("lookup_default_route_4_probes", |b| {
        b.iter(|| black_box(l.lookup(black_box(miss))))
    });
    g.finish();
}

/// Keeps the one buffer that goes round the pipeline.
#[derive(Default)]
struct Slot {
    buf: Option<VecBuf>,
    tx: u64,
    discarded: u64,
}

impl Output<VecBuf> for Slot {
    fn tx(&mut self, _port: u16, pkt: VecBuf) {
        self.tx += 1;
        self.buf = Some(pkt);
    }
    fn discard(&mut self, pkt: VecBuf) {
        self.discarded += 1;
        self.buf = Some(pkt);
    }
}

fn refill(buf: &mut VecBuf, frame: &[u8]) {
    buf.set_len(frame.len());
    buf.data_mut().copy_from_slice(frame);
}

fn pipeline(c: &mut Criterion) {
    let fib = bench_fib();
    let now = 10_000_000_000u64;
    let mut p: Pipeline<VecBuf> = Pipeline::new(fib, PipelineParams::for_tests());
    let mut alloc = VecAlloc::default();
    let mut out = Slot::default();
    p.neighbor_resolved(1, GATEWAY_IP, GATEWAY_MAC, now, &mut alloc, &mut out);
    let frame = tcp_frame(7, flow_dest(7), 64);
    out.buf = Some(VecBuf::from_frame(&frame));

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_refill_only", |b| {
        b.iter(|| {
            let mut buf = out.buf.take().unwrap();
            refill(&mut buf, black_box(&frame));
            out.buf = Some(black_box(buf));
        })
    });
    g.bench_function("handle_routed_tcp_resolved_neighbor", |b| {
        b.iter(|| {
            let mut buf = out.buf.take().unwrap();
            refill(&mut buf, black_box(&frame));
            p.handle(buf, 0, now, &mut alloc, &mut out);
        })
    });
    // The same with a fresh heap buffer each time (what a VecBuf-based test pays).
    g.bench_function("handle_routed_tcp_fresh_vecbuf", |b| {
        b.iter_batched(
            || VecBuf::from_frame(&frame),
            |buf| {
                p.handle(buf, 0, now, &mut alloc, &mut out);
                out.buf.take()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    assert!(
        out.tx > 0 && out.discarded == 0,
        "the benchmark packet was not forwarded"
    );
}

criterion_group!(benches, parse, checksums, lpm, pipeline);
criterion_main!(benches);
