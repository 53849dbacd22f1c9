//! Flow-log and translation-log hooks of the NAT (see `crate::flowlog`): the worker's
//! ring end (`Tap`), per-gateway counters (`GwLog`, beside each gateway's flow table),
//! and the poll work. Nothing here allocates, locks or makes a syscall once set up.

use super::{Ip, NatWorker};
use crate::flowlog::{Endpoint, GwLog, Tap};
use crate::packet::PacketBuf;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

impl NatWorker {
    /// Turns the logs on for this worker (at setup, control thread).
    pub fn set_flow_log(&mut self, tap: Tap) {
        for (gi, g) in self.gws.iter_mut().enumerate() {
            g.log = Some(GwLog::new(
                gi,
                g.flows.capacity(),
                tap.flows,
                tap.mappings,
                tap.interval_s,
            ));
        }
        self.flow_log = Some(tap);
    }

    /// Poll (between bursts): the clock, the interval sweep, the final flush when the
    /// control side asks for it, then the queued records into the ring.
    pub(super) fn log_poll(&mut self, now: u64) {
        let Some(tap) = self.flow_log.as_mut() else {
            return;
        };
        let now_ms = tap.clock.ms(now);
        let flush = tap.flush_requested();
        let mut lost = 0;
        for g in self.gws.iter_mut() {
            let Some(l) = g.log.as_mut() else {
                continue;
            };
            l.set_now(now_ms);
            if flush {
                for idx in 0..g.flows.capacity() as u32 {
                    l.flush_slot(idx, &g.flows);
                    if l.pending_full() {
                        l.drain_into(&mut tap.ring);
                    }
                }
            } else {
                l.sweep(&g.flows);
            }
            l.drain_into(&mut tap.ring);
            lost += l.lost;
        }
        if flush {
            // The mappings ended in the log; the gateways stop logging (no duplicates).
            for g in self.gws.iter_mut() {
                g.log = None;
            }
            tap.mark_flushed();
        }
        tap.publish_lost(lost);
    }

    /// A packet the NAT dropped: a REJECT record of its 5-tuple (flow logs on).
    pub fn log_reject<B: PacketBuf>(&mut self, pkt: &B, now: u64) {
        if self.flow_log.as_ref().is_none_or(|t| !t.flows) {
            return;
        }
        let Some(ip) = Ip::parse(pkt.data()) else {
            return;
        };
        let gi = match self.public.get(&u32::from(ip.dst)) {
            Some(&gi) => gi,
            None => match self
                .gws
                .iter()
                .position(|g| g.inside.iter().any(|p| p.contains(ip.src)))
            {
                Some(gi) => gi,
                None => return,
            },
        };
        let (sport, dport) = match ip.proto {
            IPPROTO_TCP | IPPROTO_UDP if !ip.is_later_fragment() => {
                super::udp_ports(pkt.data(), &ip)
            }
            _ => (0, 0),
        };
        if let Some(tap) = self.flow_log.as_mut() {
            tap.reject(
                gi,
                ip.proto,
                Endpoint::new(u32::from(ip.src), sport),
                Endpoint::new(u32::from(ip.dst), dport),
                ip.len,
                now,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, default_worker, s, udp, HZ, IN1, PUB0, REMOTE};
    use super::super::NatVerdict;
    use crate::flowlog::{Clock, Record, Tap, TapShared};
    use crate::packet::PacketBuf;
    use std::sync::Arc;

    #[test]
    fn a_udp_flow_gives_mapping_events_counts_and_a_reject() {
        let mut w = default_worker();
        let (ring, mut rx) = rtrb::RingBuffer::new(64);
        let shared = Arc::new(TapShared::new(1));
        w.set_flow_log(Tap {
            ring,
            clock: Clock::at(0, 1_700_000_000_000, HZ),
            shared: shared.clone(),
            worker: 0,
            flows: true,
            mappings: true,
            interval_s: 60,
            lost: 0,
            flushed: false,
        });
        w.expire(s(1));
        let mut out = udp(IN1, 5000, REMOTE, 53);
        let len = out.data().len() as u64 - 14;
        assert_eq!(w.process(&mut out, s(1)), NatVerdict::Translated);
        let (_, pport, _, _) = check(&out);
        // The worker polls between bursts (the clock the records use moves there).
        w.expire(s(2));
        let mut back = udp(REMOTE, 53, PUB0, pport);
        assert_eq!(w.process(&mut back, s(2)), NatVerdict::Translated);
        let mut stray = udp(REMOTE, 53, PUB0, pport.wrapping_add(1));
        assert!(matches!(w.process(&mut stray, s(2)), NatVerdict::Drop(_)));
        w.log_reject(&stray, s(2));
        // The UDP timeout (10 s) ends the flow; the next poll drains its records.
        w.expire(s(30));
        w.expire(s(30));
        let mut got = Vec::new();
        while let Ok(r) = rx.pop() {
            got.push(r);
        }
        assert_eq!(got.len(), 4, "{got:?}");
        // Rejects go straight to the ring; the others at the next poll, in order.
        let reject: Vec<Record> = got
            .iter()
            .copied()
            .filter(|r| matches!(r, Record::Reject { .. }))
            .collect();
        got.retain(|r| !matches!(r, Record::Reject { .. }));
        let ms = |secs: u64| 1_700_000_000_000 + secs * 1000;
        assert!(
            matches!(reject[..], [Record::Reject { proto: 17, src, dst, t_s, .. }]
                if src.addr() == REMOTE && dst.port == pport.wrapping_add(1) && u64::from(t_s) == ms(2) / 1000),
            "{reject:?}"
        );
        assert!(
            matches!(got[0], Record::Mapping { created: true, proto: 17, t_ms, inside, public, .. }
                if t_ms == ms(1) && inside.port == 5000 && public.port == pport && public.addr() == PUB0),
            "{got:?}"
        );
        assert!(
            matches!(got[1], Record::Flow { out_packets: 1, in_packets: 1, out_bytes, in_bytes, first_s: 1_700_000_001, last_s: 1_700_000_002, .. }
                if out_bytes == len && in_bytes == len),
            "{got:?}"
        );
        assert!(
            matches!(got[2], Record::Mapping { created: false, t_ms, .. } if t_ms == ms(30)),
            "{got:?}"
        );
        assert_eq!(shared.lost_total(), 0);
    }
}
