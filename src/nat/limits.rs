//! The gateway's tenant limits (`crate::limits`) on the NAT path: every packet of the
//! gateway is charged once it is classified to the gateway (after the handoff decision, so
//! the worker that translates it is the one that charges it), before any table work; a new
//! mapping is charged before its port is searched.

use super::NatWorker;
use crate::pipeline::counters::DropReason;

impl NatWorker {
    /// One packet of gateway `gi`, at the TSC of the packet being processed.
    #[inline]
    pub(super) fn limit_packet(&mut self, gi: usize) -> Result<(), DropReason> {
        let now = self.now;
        match self.gws.get_mut(gi) {
            Some(g) => g.limiter.packet(now).map_err(|r| r.nat()),
            None => Ok(()),
        }
    }

    /// A new mapping of gateway `gi`: its concurrent-flow share on this worker, then its new
    /// flows/s share.
    #[inline]
    pub(super) fn limit_new_flow(&mut self, gi: usize) -> Result<(), DropReason> {
        let now = self.now;
        let live = self.counters.get(gi).map_or(0, |c| c.active_connections);
        match self.gws.get_mut(gi) {
            Some(g) => g.limiter.new_flow(live, now).map_err(|r| r.nat()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{gw, udp, HZ, IN1, IN2, PUB0, PUB1, REMOTE};
    use super::super::{NatVerdict, NatWorker};
    use crate::config::{Ipv4Net, NatGatewayConfig, TenantLimits};
    use crate::packet::PacketBuf;
    use crate::pipeline::counters::DropReason;

    /// Gateway 0 (IN1, limited) and gateway 1 (IN2, unlimited) on one worker.
    fn two_tenants(l: TenantLimits) -> NatWorker {
        let a = NatGatewayConfig {
            id: "a".into(),
            inside_prefixes: vec![Ipv4Net { addr: IN1, len: 32 }],
            limits: l,
            ..gw(1024, 65535, None, 1000, &[PUB0])
        };
        let b = NatGatewayConfig {
            id: "b".into(),
            inside_prefixes: vec![Ipv4Net { addr: IN2, len: 32 }],
            ..gw(1024, 65535, None, 1000, &[PUB1])
        };
        NatWorker::new(&[a, b], 0, 1, HZ)
    }

    fn send(w: &mut NatWorker, from: std::net::Ipv4Addr, sport: u16, now: u64) -> NatVerdict {
        w.process(&mut udp(from, sport, REMOTE, 53), now)
    }

    #[test]
    fn new_flow_rate_and_flow_cap_bind_one_tenant_only() {
        let mut w = two_tenants(TenantLimits {
            new_flows_per_s: Some(10),
            max_flows: Some(15),
            burst_ms: 100, // one token of burst
            ..TenantLimits::default()
        });
        // Burst of 1, then one new flow per 100 ms.
        assert_eq!(send(&mut w, IN1, 1000, 0), NatVerdict::Translated);
        assert_eq!(
            send(&mut w, IN1, 1001, 0),
            NatVerdict::Drop(DropReason::NatTenantNewFlowLimit)
        );
        // The existing flow still passes; the neighbour opens 100 flows at once.
        assert_eq!(send(&mut w, IN1, 1000, 0), NatVerdict::Translated);
        for p in 0..100 {
            assert_eq!(send(&mut w, IN2, 2000 + p, 0), NatVerdict::Translated);
        }
        // Two seconds at 10/s: 14 more flows fit under the cap of 15, then the cap binds.
        let mut ok = 1;
        for (i, p) in (1001..1100).enumerate() {
            let now = (i as u64 + 1) * HZ / 10;
            match send(&mut w, IN1, p, now) {
                NatVerdict::Translated => ok += 1,
                NatVerdict::Drop(DropReason::NatTenantFlowLimit) => break,
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(ok, 15);
        let c = &w.counters()[0];
        assert_eq!(c.active_connections, 15);
        assert_eq!(c.connection_attempts, 15, "refused flows are not attempts");
        assert_eq!(c.dropped(DropReason::NatTenantNewFlowLimit), 1);
        assert_eq!(c.dropped(DropReason::NatTenantFlowLimit), 1);
        let nb = &w.counters()[1];
        assert_eq!(nb.active_connections, 100);
        assert_eq!(nb.drops.iter().sum::<u64>(), 0);
    }

    #[test]
    fn packet_rate_counts_both_directions_of_the_tenant() {
        let mut w = two_tenants(TenantLimits {
            packets_per_s: Some(100),
            burst_ms: 50, // 5 packets
            ..TenantLimits::default()
        });
        let mut out = udp(IN1, 1000, REMOTE, 53);
        assert_eq!(w.process(&mut out, 0), NatVerdict::Translated);
        let port = crate::wire::UdpPacket::new_unchecked(&out.data()[34..]).src_port();
        for _ in 0..2 {
            assert_eq!(send(&mut w, IN1, 1000, 0), NatVerdict::Translated);
        }
        // Two replies spend the last two tokens; the third is over the rate.
        for _ in 0..2 {
            let mut back = udp(REMOTE, 53, PUB0, port);
            assert_eq!(w.process(&mut back, 0), NatVerdict::Translated);
        }
        let mut back = udp(REMOTE, 53, PUB0, port);
        assert_eq!(
            w.process(&mut back, 0),
            NatVerdict::Drop(DropReason::NatTenantPpsLimit)
        );
        assert_eq!(
            send(&mut w, IN1, 1000, 0),
            NatVerdict::Drop(DropReason::NatTenantPpsLimit)
        );
        // The neighbour is not charged; 10 ms later A has one packet again.
        for p in 0..50 {
            assert_eq!(send(&mut w, IN2, 3000 + p, 0), NatVerdict::Translated);
        }
        assert_eq!(send(&mut w, IN1, 1000, HZ / 100), NatVerdict::Translated);
        assert_eq!(w.counters()[0].dropped(DropReason::NatTenantPpsLimit), 2);
    }
}
