//! The tenant limits (`crate::limits`) on the load balancer path: new flows/s, the
//! concurrent-flow cap and packets/s of one LB, with a second LB untouched.

use super::control::LbControl;
use super::*;
use crate::config::parse_str;
use crate::packet::VecBuf;
use crate::wire::{EthernetFrame, MacAddr};

const HZ: u64 = 1_000_000;
const VIP_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn conf(limits: &str) -> String {
    let lb = |id: &str, vip: Ipv4Addr, target: &str, limits: &str| {
        format!(
            "  - id: {id}
    vips: [{vip}]
    maglev_table_size: 65537
    flows_per_core: 4096
{limits}    listeners:
      - {{protocol: udp, port: 53, target_group: g}}
    target_groups:
      - name: g
        targets:
          - {{ip: {target}, port: 5353}}
"
        )
    };
    format!(
        "{}{}{}",
        super::tests::CONF_BASE,
        lb("a", VIP_A, "10.1.0.2", limits),
        lb("b", VIP_B, "10.1.0.3", "")
    )
}

fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> VecBuf {
    let mut f = vec![0u8; 14 + 20 + 12];
    {
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_dst_addr(MacAddr::new(2, 0, 0, 0, 0, 1));
        e.set_src_addr(MacAddr::new(2, 0, 0, 0, 0, 2));
        e.set_ethertype(0x0800);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len(32);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let mut u = UdpPacket::new_unchecked(&mut f[34..]);
    u.set_src_port(sp);
    u.set_dst_port(dp);
    u.set_len(12);
    u.fill_checksum(src, dst);
    VecBuf::from_frame(&f)
}

fn worker(limits: &str) -> (LbControl, LbWorker) {
    let c = parse_str(&conf(limits), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let ctl = LbControl::new(&c.load_balancers, HZ, 0);
    let w = LbWorker::new(&c.load_balancers, ctl.cell(), 0, 1, HZ);
    (ctl, w)
}

fn send(w: &mut LbWorker, vip: Ipv4Addr, sport: u16, now: u64) -> StageVerdict {
    w.process(&mut udp(CLIENT, sport, vip, 53), now)
}

#[test]
fn new_flow_rate_and_cap_bind_one_load_balancer_only() {
    let (_ctl, mut w) = worker("    limits: {new_flows_per_s: 10, max_flows: 5, burst_ms: 200}\n");
    // Burst of 2, then one per 100 ms, up to 5 flows.
    assert_eq!(send(&mut w, VIP_A, 1000, 0), StageVerdict::Translated);
    assert_eq!(send(&mut w, VIP_A, 1001, 0), StageVerdict::Translated);
    assert_eq!(
        send(&mut w, VIP_A, 1002, 0),
        StageVerdict::Drop(DropReason::LbTenantNewFlowLimit)
    );
    assert_eq!(send(&mut w, VIP_A, 1000, 0), StageVerdict::Translated);
    for p in 0..50 {
        assert_eq!(send(&mut w, VIP_B, 2000 + p, 0), StageVerdict::Translated);
    }
    for (i, p) in (1002..1005).enumerate() {
        let now = (i as u64 + 1) * HZ / 10;
        assert_eq!(send(&mut w, VIP_A, p, now), StageVerdict::Translated);
    }
    assert_eq!(
        send(&mut w, VIP_A, 1005, s(10)),
        StageVerdict::Drop(DropReason::LbTenantFlowLimit)
    );
    let a = &w.counters()[0];
    assert_eq!((a.active_flows, a.new_flows), (5, 5));
    assert_eq!(a.drops[DropReason::LbTenantNewFlowLimit as usize], 1);
    assert_eq!(a.drops[DropReason::LbTenantFlowLimit as usize], 1);
    let b = &w.counters()[1];
    assert_eq!(b.active_flows, 50);
    assert_eq!(b.drops.iter().sum::<u64>(), 0);
}

#[test]
fn packet_rate_binds_client_packets() {
    let (_ctl, mut w) = worker("    limits: {packets_per_s: 100, burst_ms: 30}\n");
    for _ in 0..3 {
        assert_eq!(send(&mut w, VIP_A, 1000, 0), StageVerdict::Translated);
    }
    assert_eq!(
        send(&mut w, VIP_A, 1000, 0),
        StageVerdict::Drop(DropReason::LbTenantPpsLimit)
    );
    assert_eq!(send(&mut w, VIP_B, 1000, 0), StageVerdict::Translated);
    assert_eq!(
        send(&mut w, VIP_A, 1000, HZ / 100),
        StageVerdict::Translated
    );
}

fn s(secs: u64) -> u64 {
    secs * HZ
}

#[test]
fn a_reload_changes_limits_live_and_keeps_the_flows() {
    let (mut ctl, mut w) = worker("    limits: {new_flows_per_s: 10, burst_ms: 100}\n");
    // Bucket depth 1: the second new flow is refused.
    assert_eq!(send(&mut w, VIP_A, 1000, 0), StageVerdict::Translated);
    assert_eq!(
        send(&mut w, VIP_A, 1001, 0),
        StageVerdict::Drop(DropReason::LbTenantNewFlowLimit)
    );
    let c = parse_str(
        &conf("    limits: {new_flows_per_s: 1000, burst_ms: 100}\n"),
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let log = ctl.reload(&c.load_balancers, 0).unwrap();
    assert!(log.iter().any(|l| l.contains("limits changed")), "{log:?}");
    let mut rng = crate::nat::ports::Rng::new(1);
    let mut u = ctl.update_for(0, 1, &mut rng).expect("new buckets");
    ctl.sent();
    w.reconcile(&mut u);
    // Depth 100 now; the flow of before is still pinned.
    for p in 0..50 {
        assert_eq!(send(&mut w, VIP_A, 2000 + p, 0), StageVerdict::Translated);
    }
    assert_eq!(send(&mut w, VIP_A, 1000, 0), StageVerdict::Translated);
    assert_eq!(w.counters()[0].active_flows, 51);
}
