//! The stateful stages a worker runs between ingress and routing, registered here and
//! nowhere else. The pipeline knows them only through `pipeline::Stages`; dispatch is an
//! enum match (no virtual call per packet). A packet is offered to the stages in order and
//! the first that claims it (any verdict but `Pass`) decides. The load balancer goes first:
//! its targets' replies may come from a NAT gateway's inside prefix, and must be
//! translated back to the VIP rather than source-NATed.

use crate::lb::stage::LbStage;
use crate::nat::stage::NatStage;
use crate::packet::PacketBuf;
use crate::pipeline::{Parsed, StageVerdict, Stages};

/// One registered stage.
// One chain per worker, built once and never moved per packet: boxing the larger variant
// would only add a pointer chase to every packet.
// The control thread builds every worker's chain, one after another: aligned to 128 bytes
// (a cache-line pair, as `CachePadded`), each stage's inline state (NAT/LB scalars written
// per packet) owns its lines, never sharing one with another worker's (cache-line audit,
// docs/benchmarks.md; test `stage_state_owns_whole_cache_lines`).
#[allow(clippy::large_enum_variant)]
#[repr(align(128))]
pub enum Stage {
    Lb(LbStage),
    Nat(NatStage),
}

impl Stage {
    #[inline]
    fn process<B: PacketBuf>(&mut self, pkt: &mut B, p: &Parsed, now: u64) -> StageVerdict {
        match self {
            Stage::Lb(s) => s.process(pkt, p, now),
            Stage::Nat(s) => Stages::<B>::process(s, pkt, p, now),
        }
    }
    fn poll<B: PacketBuf>(&mut self, now: u64) {
        match self {
            Stage::Lb(s) => s.poll(now),
            Stage::Nat(s) => Stages::<B>::poll(s, now),
        }
    }
    fn publish<B: PacketBuf>(&mut self) {
        match self {
            Stage::Lb(s) => s.publish(),
            Stage::Nat(s) => Stages::<B>::publish(s),
        }
    }
}

/// A live reload's changes for one worker's stages, built on the control thread. The
/// worker applies it between bursts (moves only) and sends it back through `back`, with
/// what it replaced, to be freed on the control thread.
pub struct TenantUpdate {
    pub nat: Option<crate::nat::reconcile::NatUpdate>,
    pub lb: Option<crate::lb::reconcile::LbUpdate>,
    pub back: crossbeam_channel::Sender<Box<TenantUpdate>>,
}

/// The chain a worker runs (LB, then NAT), in claim order.
#[derive(Default)]
pub struct StageChain {
    stages: Vec<Stage>,
}

impl StageChain {
    /// `None` when no stage is configured (the pipeline then skips the chain entirely).
    pub fn build(lb: Option<LbStage>, nat: Option<NatStage>) -> Option<StageChain> {
        let mut stages = Vec::new();
        stages.extend(lb.map(Stage::Lb));
        stages.extend(nat.map(Stage::Nat));
        (!stages.is_empty()).then_some(StageChain { stages })
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Between bursts: a live reload's tenant changes.
    pub fn apply(&mut self, u: &mut TenantUpdate) {
        for s in self.stages.iter_mut() {
            match (s, u.nat.as_mut(), u.lb.as_mut()) {
                (Stage::Nat(n), Some(nu), _) => {
                    n.nat.reconcile(nu);
                    n.published.publish_now(&n.nat);
                }
                (Stage::Lb(l), _, Some(lu)) => {
                    l.lb.reconcile(lu);
                    l.published.publish(&l.lb);
                }
                _ => {}
            }
        }
    }

    /// Whether any stage wants `prefetch` calls (asked once per burst).
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        self.stages.iter().any(|s| match s {
            Stage::Nat(n) => n.wants_lookahead(),
            Stage::Lb(l) => l.wants_lookahead(),
        })
    }

    /// Burst lookahead: start loading the flow-table lines the lookup of packet `id`
    /// (descriptor `p`) will need (`deep`: its bucket was prefetched earlier, now its
    /// entry). A hint only.
    #[inline]
    pub fn prefetch(&mut self, id: usize, p: &Parsed, deep: bool) {
        let tuple = if deep { None } else { p.tuple() };
        if !deep && tuple.is_none() {
            return;
        }
        for s in self.stages.iter_mut() {
            match s {
                Stage::Nat(n) => n.prefetch(id, tuple, deep),
                Stage::Lb(l) => l.prefetch(id, tuple, deep),
            }
        }
    }
}

impl<B: PacketBuf> Stages<B> for StageChain {
    #[inline]
    fn process(&mut self, pkt: &mut B, p: &Parsed, now: u64) -> StageVerdict {
        for s in self.stages.iter_mut() {
            match s.process(pkt, p, now) {
                StageVerdict::Pass => continue,
                v => return v,
            }
        }
        StageVerdict::Pass
    }
    fn poll(&mut self, now: u64) {
        for s in self.stages.iter_mut() {
            s.poll::<B>(now);
        }
    }
    fn publish(&mut self) {
        for s in self.stages.iter_mut() {
            s.publish::<B>();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The chain inside a real `Pipeline`: the LB claims its traffic before the NAT, the
    //! NAT still translates the rest, and the packets leave routed (TTL decremented).
    use super::*;
    use crate::lb::control::LbControl;
    use crate::lb::stage::{LbPublished, LbStage};
    use crate::lb::LbWorker;
    use crate::nat::stage::NatPublished;
    use crate::nat::NatWorker;
    use crate::packet::{VecAlloc, VecBuf};
    use crate::pipeline::route::Fib;
    use crate::pipeline::{Output, Pipeline, PipelineParams};
    use crate::wire::{EthernetFrame, Ipv4Packet, MacAddr, TcpPacket};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    #[test]
    fn stage_state_owns_whole_cache_lines() {
        use crate::nat::counters::GatewayCounters;
        use std::mem::{align_of, size_of};
        for (name, size, align) in [
            ("Stage", size_of::<Stage>(), align_of::<Stage>()),
            (
                "GatewayCounters",
                size_of::<GatewayCounters>(),
                align_of::<GatewayCounters>(),
            ),
            (
                "LbCounters",
                size_of::<crate::lb::counters::LbCounters>(),
                align_of::<crate::lb::counters::LbCounters>(),
            ),
        ] {
            assert!(
                align >= 128 && size % 128 == 0,
                "{name}: {size} B, align {align}"
            );
        }
    }

    const YAML: &str = "
lcores:
  workers: [1]
ports:
  - name: front
    device: net_tap0,iface=a
    addresses: [198.51.100.1/24]
  - name: back
    device: net_tap1,iface=b
    addresses: [10.1.0.1/24]
nat_gateways:
  - id: n
    inside_prefixes: [10.1.0.0/24]
    public_ips: [198.51.100.20]
load_balancers:
  - id: web
    vips: [198.51.100.10]
    listeners:
      - {protocol: tcp, port: 80, target_group: web}
    target_groups:
      - name: web
        targets:
          - {ip: 10.1.0.2, port: 8080}
";
    const MACS: [MacAddr; 2] = [MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])];
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const TARGET: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    #[derive(Default)]
    struct Out(Vec<(u16, VecBuf)>);
    impl Output<VecBuf> for Out {
        fn tx(&mut self, port: u16, pkt: VecBuf) {
            self.0.push((port, pkt));
        }
        fn discard(&mut self, _pkt: VecBuf) {}
    }

    fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8, dst_mac: MacAddr) -> VecBuf {
        let mut f = vec![0u8; 14 + 40];
        {
            let mut e = EthernetFrame::new_unchecked(&mut f[..]);
            e.set_dst_addr(dst_mac);
            e.set_src_addr(MacAddr([2, 0, 0, 0, 9, 9]));
            e.set_ethertype(0x0800);
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len(40);
        ip.set_ttl(64);
        ip.set_protocol(6);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        let mut t = TcpPacket::new_unchecked(ip.payload_mut());
        t.set_src_port(sp);
        t.set_dst_port(dp);
        t.set_header_len(20);
        t.set_flags(flags);
        t.set_window(1000);
        t.fill_checksum(src, dst);
        VecBuf::from_frame(&f)
    }

    fn ends(b: &VecBuf) -> (Ipv4Addr, u16, Ipv4Addr, u16, u8) {
        let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(ip.verify_checksum() && t.verify_checksum(ip.src_addr(), ip.dst_addr()));
        (
            ip.src_addr(),
            t.src_port(),
            ip.dst_addr(),
            t.dst_port(),
            ip.ttl(),
        )
    }

    #[test]
    fn lb_claims_before_nat_and_nat_still_translates() {
        let cfg = crate::config::parse_str(YAML, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let hz = PipelineParams::for_tests().tsc_hz;
        let fib = Arc::new(Fib::build(&cfg, &[0, 1], &MACS, 1));
        let ctl = LbControl::new(&cfg.load_balancers, hz, 0);
        let lb = LbWorker::new(&cfg.load_balancers, ctl.cell(), 0, 1, hz);
        let nat = NatWorker::new(&cfg.nat_gateways, 0, 1, hz);
        let mut p: Pipeline<VecBuf> = Pipeline::new(fib, PipelineParams::for_tests());
        p.stages = StageChain::build(
            Some(LbStage::new(lb, Arc::new(LbPublished::new(1)))),
            Some(NatStage::new(nat, Arc::new(NatPublished::new(1)))),
        );
        assert_eq!(p.stages.as_ref().map(|c| c.stages().len()), Some(2));
        let mut alloc = VecAlloc::default();
        let mut out = Out::default();
        let now = 1_000;
        p.neighbor_resolved(
            0,
            CLIENT,
            MacAddr([2, 0, 0, 0, 7, 7]),
            now,
            &mut alloc,
            &mut out,
        );
        p.neighbor_resolved(
            1,
            TARGET,
            MacAddr([2, 0, 0, 0, 8, 8]),
            now,
            &mut alloc,
            &mut out,
        );
        // Client -> VIP: to the target, client address kept.
        let syn = tcp(
            CLIENT,
            40000,
            Ipv4Addr::new(198, 51, 100, 10),
            80,
            0x02,
            MACS[0],
        );
        p.handle(syn, 0, now, &mut alloc, &mut out);
        let (port, b) = out.0.pop().expect("forwarded");
        assert_eq!(port, 1);
        assert_eq!(ends(&b), (CLIENT, 40000, TARGET, 8080, 63));
        // The target's reply (its source is in the NAT's inside prefix): back from the VIP.
        let r = tcp(TARGET, 8080, CLIENT, 40000, 0x12, MACS[1]);
        p.handle(r, 1, now, &mut alloc, &mut out);
        let (port, b) = out.0.pop().expect("forwarded");
        assert_eq!(port, 0);
        assert_eq!(
            ends(&b),
            (Ipv4Addr::new(198, 51, 100, 10), 80, CLIENT, 40000, 63)
        );
        // The target's own outbound connection: the NAT translates it.
        let o = tcp(TARGET, 5555, CLIENT, 443, 0x02, MACS[1]);
        p.handle(o, 1, now, &mut alloc, &mut out);
        let (port, b) = out.0.pop().expect("forwarded");
        assert_eq!(port, 0);
        let (src, _, dst, dport, _) = ends(&b);
        assert_eq!(
            (src, dst, dport),
            (Ipv4Addr::new(198, 51, 100, 20), CLIENT, 443)
        );
        // Nothing to a VIP port without a listener gets through; counted globally.
        let bad = tcp(
            CLIENT,
            1,
            Ipv4Addr::new(198, 51, 100, 10),
            81,
            0x02,
            MACS[0],
        );
        p.handle(bad, 0, now, &mut alloc, &mut out);
        assert!(out.0.is_empty());
        assert_eq!(
            p.counters.drops[crate::pipeline::counters::DropReason::LbNoListener as usize],
            1
        );
    }
}
