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
