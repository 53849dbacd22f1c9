//! Flow-log and translation-log hooks of the load balancer (see `crate::flowlog` and
//! docs/operations.md): the same per-slot counters (`GwLog`) as the NAT, over a view of
//! each flow that adds the full-NAT address the target sees (`LbView`), and the worker's
//! own ring end (a second `Tap` per worker, beside the NAT's). Nothing here allocates,
//! locks or makes a syscall once set up; with the logs off every hook is one `Option`
//! test.

use super::{mf, Ip, LbState, LbWorker, Meta};
use crate::flowlog::{Endpoint, FlowStats, GwLog, Logged, Record, Tap, LB_TENANT};
use crate::nat::flow::{Flow, FlowTable};
use crate::packet::PacketBuf;
use crate::pipeline::StageVerdict;
use crate::wire::{Ipv4Packet, IPPROTO_TCP, IPPROTO_UDP};
use std::net::Ipv4Addr;

/// A load-balancer flow as the logs see it: its `Flow` (`inside` = VIP:port, `remote` =
/// client, `public` = target) and, for full NAT, the LB address:port (`snat`; ip 0 for
/// client IP preservation).
#[derive(Debug, Clone, Copy, Default)]
pub struct LbView {
    pub flow: Flow,
    pub snat: Endpoint,
}

impl Logged for LbView {
    fn flow_record(&self, lb: u16, s: &FlowStats) -> Record {
        let f = &self.flow;
        Record::LbFlow {
            lb,
            proto: f.proto,
            client_ip: f.remote_ip,
            client_port: f.remote_port,
            vip_ip: f.inside_ip,
            vip_port: f.inside_port,
            target_ip: f.public_ip,
            target_port: f.public_port,
            snat_ip: self.snat.ip,
            snat_port: self.snat.port,
            out_packets: s.out_packets,
            in_packets: s.in_packets,
            out_bytes: s.out_bytes,
            in_bytes: s.in_bytes,
            first_s: s.first_s,
            last_s: s.last_s,
        }
    }

    fn mapping_record(&self, lb: u16, created: bool, t_ms: u64) -> Record {
        let f = &self.flow;
        Record::LbMapping {
            lb,
            created,
            proto: f.proto,
            client: Endpoint::new(f.remote_ip, f.remote_port),
            vip: Endpoint::new(f.inside_ip, f.inside_port),
            target: Endpoint::new(f.public_ip, f.public_port),
            snat: self.snat,
            t_ms,
        }
    }
}

/// One load balancer's logging state on one worker.
pub type LbLog = GwLog<LbView>;

/// A packet the LB answered with a RST, noted before the RST overwrote it (the REJECT
/// record is made after the stage returns, when the snapshot names its load balancer).
#[derive(Debug, Clone, Copy)]
struct Refused {
    proto: u8,
    src: Endpoint,
    dst: Endpoint,
    bytes: usize,
}

/// The worker's end of the logs for its load balancers.
pub struct LbTap {
    tap: Tap,
    refused: Option<Refused>,
}

/// Log state for a load balancer's tables of `capacity` slots (`None`: nothing logged).
fn new_log(
    li: usize,
    capacity: usize,
    (flows, mappings, interval_s): (bool, bool, u32),
) -> Option<LbLog> {
    (flows || mappings).then(|| GwLog::new(li, capacity, flows, mappings, interval_s))
}

/// The live flow of slot `idx` as the logs see it.
fn view_of(flows: &FlowTable, meta: &[Meta], idx: u32) -> Option<LbView> {
    let f = flows.get(idx).copied()?;
    let m = meta.get(idx as usize)?;
    if f.proto == 0 || f.is_dead() {
        return None;
    }
    let snat = if m.flags & mf::FULLNAT != 0 {
        Endpoint::new(m.lb_ip, m.lb_port)
    } else {
        Endpoint::default()
    };
    Some(LbView { flow: f, snat })
}

impl LbState {
    fn log_view(&self, idx: u32) -> Option<LbView> {
        view_of(&self.flows, &self.meta, idx)
    }

    /// A packet of flow `idx` was forwarded (`client`: client to target). Logs off: one
    /// test inlined into the packet path; the rest is out of line so that it does not
    /// weigh on the path's registers.
    #[inline(always)]
    pub(super) fn log_count(&mut self, idx: u32, client: bool, bytes: usize) {
        if self.log.is_some() {
            self.log_count_on(idx, client, bytes);
        }
    }

    /// The view is made only when a record is due.
    #[inline(never)]
    fn log_count_on(&mut self, idx: u32, client: bool, bytes: usize) {
        let LbState {
            log, flows, meta, ..
        } = self;
        if let Some(l) = log.as_mut() {
            l.count_with(idx, client, bytes, || {
                view_of(flows, meta, idx).unwrap_or_default()
            });
        }
    }

    /// Flow `idx` was stored (its meta set): counters reset, the `created` event.
    #[inline(always)]
    pub(super) fn log_created(&mut self, idx: u32) {
        if self.log.is_some() {
            self.log_event(idx, true);
        }
    }

    /// Flow `idx` is being unindexed: its last counters, the `deleted` event.
    #[inline(always)]
    pub(super) fn log_retired(&mut self, idx: u32) {
        if self.log.is_some() {
            self.log_event(idx, false);
        }
    }

    #[inline(never)]
    fn log_event(&mut self, idx: u32, created: bool) {
        if let (Some(v), Some(l)) = (self.log_view(idx), self.log.as_mut()) {
            if created {
                l.created(idx, &v);
            } else {
                l.retired(idx, &v);
            }
        }
    }
}

impl LbWorker {
    /// Turns the logs on for this worker's load balancers (at setup, control thread).
    pub fn set_flow_log(&mut self, tap: Tap) {
        let s = (tap.flows, tap.mappings, tap.interval_s);
        for (li, st) in self.lbs.iter_mut().enumerate() {
            st.log = new_log(li, st.flows.capacity(), s);
        }
        self.flow_log = Some(LbTap { tap, refused: None });
    }

    /// Poll (between bursts): the clock, the interval sweep, the final flush when the
    /// control side asks for it, then the queued records into the ring.
    pub(super) fn log_poll(&mut self, now: u64) {
        let Some(lt) = self.flow_log.as_mut() else {
            return;
        };
        let tap = &mut lt.tap;
        let now_ms = tap.clock.ms(now);
        let flush = tap.flush_requested();
        let mut lost = 0;
        for st in self.lbs.iter_mut() {
            let Some(mut l) = st.log.take() else {
                continue;
            };
            l.set_now(now_ms);
            if flush {
                for idx in 0..st.flows.capacity() as u32 {
                    l.flush_live(idx, st.log_view(idx));
                    if l.pending_full() {
                        l.drain_into(&mut tap.ring);
                    }
                }
            } else {
                l.sweep_by(|i| st.log_view(i));
            }
            l.drain_into(&mut tap.ring);
            lost += l.lost;
            // After the flush the load balancers stop logging (no duplicate events).
            if !flush {
                st.log = Some(l);
            }
        }
        if flush {
            tap.mark_flushed();
        }
        tap.publish_lost(lost);
    }

    /// `rst` is about to answer this packet: note what was refused (logs on only).
    pub(super) fn log_note_rst<B: PacketBuf>(&mut self, pkt: &B, ip: &Ip) {
        let Some(lt) = self.flow_log.as_mut().filter(|t| t.tap.flows) else {
            return;
        };
        let (sport, dport) = ports(pkt.data(), ip.hl, ip.proto, !ip.fragment);
        lt.refused = Some(Refused {
            proto: ip.proto,
            src: Endpoint::new(u32::from(ip.src), sport),
            dst: Endpoint::new(u32::from(ip.dst), dport),
            bytes: ip.len,
        });
    }

    /// After the stage: a packet the LB dropped or answered with a RST becomes a REJECT
    /// record of the load balancer it was for (flow logs on).
    #[inline(never)]
    pub fn log_reject<B: PacketBuf>(&mut self, pkt: &B, v: StageVerdict, now: u64) {
        let Some(lt) = self.flow_log.as_mut().filter(|t| t.tap.flows) else {
            return;
        };
        let r = match v {
            StageVerdict::Respond(_) => lt.refused.take(),
            StageVerdict::Drop(_) => refused_of(pkt.data()),
            _ => None,
        };
        let (Some(r), Some(snap)) = (r, self.snap.as_ref()) else {
            return;
        };
        let dst = Ipv4Addr::from(r.dst.ip);
        let li = snap
            .lb_of_vip(dst)
            .or_else(|| snap.lb_of_address(dst))
            .or_else(|| {
                let ep = (u64::from(r.src.ip) << 16) | u64::from(r.src.port);
                snap.dnat_endpoints.get(&ep).map(|&l| l as usize)
            });
        if let Some(li) = li {
            let gw = (li as u16 & !LB_TENANT) | LB_TENANT;
            lt.tap
                .reject(usize::from(gw), r.proto, r.src, r.dst, r.bytes, now);
        }
    }
}

/// The REJECT facts of an unmodified frame.
fn refused_of(frame: &[u8]) -> Option<Refused> {
    let p = Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
    let (proto, hl) = (p.protocol(), p.header_len());
    let (sport, dport) = ports(frame, hl, proto, p.frag_offset() == 0);
    Some(Refused {
        proto,
        src: Endpoint::new(u32::from(p.src_addr()), sport),
        dst: Endpoint::new(u32::from(p.dst_addr()), dport),
        bytes: usize::from(p.total_len()),
    })
}

/// TCP/UDP ports of a packet that carries its transport header (else 0, as AWS logs ICMP).
fn ports(frame: &[u8], hl: usize, proto: u8, first: bool) -> (u16, u16) {
    match (proto, frame.get(14 + hl..14 + hl + 4)) {
        (IPPROTO_TCP | IPPROTO_UDP, Some(b)) if first => (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ),
        _ => (0, 0),
    }
}

impl super::control::LbControl {
    /// Logs are on (flows, mappings, interval): the tables a reload adds log too.
    pub fn set_log(&mut self, s: (bool, bool, u32)) {
        self.log = Some(s);
    }
}

impl super::reconcile::LbUpdate {
    /// The fresh tables of this update log too (built on the control thread).
    pub fn set_log(&mut self, s: (bool, bool, u32)) {
        for (li, st) in self.fresh.iter_mut() {
            st.log = new_log(*li, st.flows.capacity(), s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{setup, tcp, tuple, udp, CLIENT, GROUPS, HZ, LBA, VIP};
    use crate::flowlog::{Clock, Endpoint, Record, Tap, TapShared, LB_TENANT};
    use crate::packet::PacketBuf;
    use crate::pipeline::StageVerdict;
    use crate::wire::tcp::SYN;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    const T0_MS: u64 = 1_700_000_000_000;

    fn s(secs: u64) -> u64 {
        secs * HZ
    }

    fn tap(ring: rtrb::Producer<Record>, shared: &Arc<TapShared>) -> Tap {
        Tap {
            ring,
            clock: Clock::at(0, T0_MS, HZ),
            shared: shared.clone(),
            worker: 0,
            flows: true,
            mappings: true,
            interval_s: 60,
            lost: 0,
            flushed: false,
        }
    }

    fn drain(rx: &mut rtrb::Consumer<Record>) -> Vec<Record> {
        let mut v = Vec::new();
        while let Ok(r) = rx.pop() {
            v.push(r);
        }
        v
    }

    #[test]
    fn a_full_nat_flow_gives_events_counts_and_rejects() {
        let (_c, mut w) = setup(GROUPS);
        let (ring, mut rx) = rtrb::RingBuffer::new(64);
        let shared = Arc::new(TapShared::new(1));
        w.set_flow_log(tap(ring, &shared));
        w.expire(s(1));
        let mut b = udp(CLIENT, 5000, VIP, 53);
        let len = b.data().len() - 14;
        assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
        let (_, lport, target, tport) = tuple(&b);
        w.expire(s(2));
        let mut r = udp(target, tport, LBA, lport);
        assert_eq!(w.process(&mut r, s(2)), StageVerdict::Translated);
        let mut b2 = udp(CLIENT, 5000, VIP, 53);
        assert_eq!(w.process(&mut b2, s(2)), StageVerdict::Translated);
        // Refused: a port without listener, a reply to a port without flow.
        let mut nol = tcp(CLIENT, 7000, VIP, 81, SYN);
        let v = w.process(&mut nol, s(2));
        assert!(matches!(v, StageVerdict::Drop(_)), "{v:?}");
        w.log_reject(&nol, v, s(2));
        let mut stray = udp(target, tport, LBA, 1);
        let v = w.process(&mut stray, s(2));
        w.log_reject(&stray, v, s(2));
        // The UDP idle timeout (30 s) ends the flow; the poll drains its records.
        for _ in 0..100 {
            w.expire(s(40));
        }
        let got = drain(&mut rx);
        let ep = |ip: std::net::Ipv4Addr, port| Endpoint::new(u32::from(ip), port);
        let rejects: Vec<&Record> = got
            .iter()
            .filter(|r| matches!(r, Record::Reject { .. }))
            .collect();
        assert!(
            matches!(rejects[..], [Record::Reject { gw, proto: 6, src, dst, bytes, t_s }, Record::Reject { gw: gw2, proto: 17, src: src2, dst: dst2, .. }]
                if *gw == LB_TENANT && *gw2 == LB_TENANT && *src == ep(CLIENT, 7000) && *dst == ep(VIP, 81)
                    && *bytes == 45 && u64::from(*t_s) == T0_MS / 1000 + 2
                    && *src2 == ep(target, tport) && *dst2 == ep(LBA, 1)),
            "{got:?}"
        );
        let rest: Vec<&Record> = got
            .iter()
            .filter(|r| !matches!(r, Record::Reject { .. }))
            .collect();
        assert_eq!(rest.len(), 3, "{got:?}");
        let snat = ep(LBA, lport);
        assert!(
            matches!(rest[0], Record::LbMapping { lb: 0, created: true, proto: 17, client, vip, target: t, snat: sn, t_ms }
                if *client == ep(CLIENT, 5000) && *vip == ep(VIP, 53) && *t == ep(target, tport)
                    && *sn == snat && *t_ms == T0_MS + 1000),
            "{got:?}"
        );
        assert!(
            matches!(rest[1], Record::LbFlow { lb: 0, out_packets: 2, in_packets: 1, out_bytes, in_bytes, snat_ip, snat_port, first_s, last_s, .. }
                if *out_bytes == 2 * len as u64 && *in_bytes == len as u64 && *snat_ip == snat.ip
                    && *snat_port == lport && u64::from(*first_s) == T0_MS / 1000 + 1
                    && u64::from(*last_s) == T0_MS / 1000 + 2),
            "{got:?}"
        );
        assert!(
            matches!(rest[2], Record::LbMapping { created: false, t_ms, .. } if *t_ms == T0_MS + 40_000),
            "{got:?}"
        );
        assert_eq!(shared.lost_total(), 0);
    }

    #[test]
    fn dnat_flows_are_flushed_at_stop() {
        let (_c, mut w) = setup(GROUPS);
        let (ring, mut rx) = rtrb::RingBuffer::new(64);
        let shared = Arc::new(TapShared::new(1));
        w.set_flow_log(tap(ring, &shared));
        w.expire(s(1));
        let mut b = tcp(CLIENT, 6000, VIP, 80, SYN);
        assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
        shared.flush_req.store(true, Ordering::Release);
        w.expire(s(2));
        assert!(shared.flushed[0].load(Ordering::Acquire));
        let got = drain(&mut rx);
        assert!(
            matches!(got[..], [Record::LbMapping { created: true, snat, .. }, Record::LbFlow { out_packets: 1, in_packets: 0, snat_ip: 0, .. }, Record::LbMapping { created: false, .. }]
                if snat.ip == 0),
            "{got:?}"
        );
        // After the flush nothing more is logged.
        let mut b = tcp(CLIENT, 6001, VIP, 80, SYN);
        assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
        w.expire(s(3));
        assert!(drain(&mut rx).is_empty());
    }
}
