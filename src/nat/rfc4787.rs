//! `rfc4787` mode (RFC 4787 / RFC 5382 / RFC 5508 behaviour, selected per gateway):
//!
//! - **Endpoint-independent mapping** (RFC 4787 REQ-1, RFC 5382 REQ-1): every flow from one
//!   inside (IP, port, proto) -- or (IP, echo identifier) -- uses the same public
//!   (IP, port) whatever its destination, for as long as any of those flows lives. The
//!   mapping (see `eim`) is refcounted by its flows. A new mapping takes a public port that
//!   no live mapping holds for that (public IP, proto), from anywhere in this worker's
//!   slice: the per-destination window and limit of `aws` mode do not apply (a mapping
//!   serves every destination; the bound is the port range per public IP). The public IP
//!   is paired with the inside IP (REQ-2 "paired" pooling: a keyed hash of the inside IP
//!   picks it; the others are tried in turn only when it is out of ports).
//! - **Address-dependent filtering** (REQ-8): an inbound packet to a mapped public endpoint
//!   with no flow of its own is accepted from a remote IP the inside endpoint has sent to
//!   (any port of it) and gets a new flow bound to the same mapping (TCP: only a SYN opens
//!   one; UDP: any datagram); from any other IP it is dropped as `NatFiltered`.
//! - **Hairpinning** (REQ-9, RFC 5382 REQ-8): a packet from an inside host of an `rfc4787`
//!   gateway to one of the appliance's public IPs is translated twice: in2out (the
//!   sender's mapping, created or reused, becomes its source) and then out2in exactly as if
//!   it had come back from the internet (its destination becomes the target's inside
//!   endpoint, with the target's filtering applied). The result is a `Translated` packet
//!   whose destination is inside; the pipeline routes it.
//!
//! Ownership with several workers: public ports stay sliced per worker and return traffic
//! still goes to the port's owner (`Handoff`). For the mapping of an inside endpoint to be
//! unique without shared state, all outbound traffic of one inside IP is handled by one
//! worker, `inside_owner(ip)` (a fixed keyed hash of the address, the same on every
//! worker; by IP rather than by endpoint so that later fragments, which carry no ports,
//! find their chain); it allocates from its own slice, so the mapping lives on the worker
//! that owns its public port. Outbound packets that RSS delivers elsewhere are handed to
//! the owner first (before any counting), like return traffic. A hairpinned packet is
//! translated in2out on the sender's owner and, if the target's public port belongs to
//! another worker, handed over half-translated; the owner sees an ordinary inbound packet
//! from a public endpoint.

use super::eim::Mapping;
use super::flow::{mix2, st, Flow, Key};
use super::icmp_error;
use super::ip_st;
use super::ports::{Rng, RssSteering};
use super::{Gateway, GatewayCounters, Ip, NatVerdict, NatWorker};
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::wire::IPPROTO_ICMP;
use std::net::Ipv4Addr;

/// Seed of `inside_owner`: must be the same on every worker.
const OWNER_SEED: u64 = 0x6f77_6e65_7234_3738;
/// Seed of the paired-pooling choice of a public IP for an inside IP.
const PAIRING_SEED: u64 = 0x7061_6972_6564_4950;

/// The worker handling outbound traffic (and so holding the mappings) of an inside IP.
#[inline]
pub fn inside_owner(ip: Ipv4Addr, n_workers: usize) -> usize {
    let n = n_workers.max(1) as u64;
    (mix2(OWNER_SEED, u64::from(u32::from(ip)), 0) % n) as usize
}

impl Gateway {
    /// Stores and arms a new flow of mapping `m_idx` and counts it; takes the flow's
    /// filtering permission if `f` has `st::ALLOWS`. On failure a mapping left without
    /// flows is removed.
    fn bind(
        &mut self,
        c: &mut GatewayCounters,
        m_idx: u32,
        f: Flow,
        t: u32,
    ) -> Result<u32, DropReason> {
        let Some(idx) = self.store(c, f, t) else {
            if let Some(e) = self.eim.as_mut() {
                e.release_unused(m_idx);
            }
            return Err(DropReason::NatTableFull);
        };
        let Gateway { eim, flows, .. } = self;
        if let Some(e) = eim.as_mut() {
            e.acquire(m_idx);
            if f.state & st::ALLOWS != 0 && !e.permit(&f) {
                if let Some(f) = flows.get_mut(idx) {
                    f.state &= !st::ALLOWS;
                }
            }
        }
        Ok(idx)
    }

    /// A new outbound flow: on the inside endpoint's mapping, or on a new one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_eim(
        &mut self,
        c: &mut GatewayCounters,
        rng: &mut Rng,
        steer: Option<&RssSteering>,
        worker: usize,
        proto: u8,
        inside: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
        state: u8,
        t: u32,
    ) -> Result<u32, DropReason> {
        let Gateway {
            eim,
            ports,
            public_ips,
            ip_state,
            ..
        } = self;
        let Some(eim) = eim.as_mut() else {
            return Err(DropReason::NatNoMapping);
        };
        let iip = u32::from(inside.0);
        let m_idx = match eim.lookup_inside(proto, iip, inside.1) {
            Some(m) => m,
            None => {
                let n_ips = public_ips.len() as u32;
                let start = if n_ips == 0 {
                    0
                } else {
                    (mix2(PAIRING_SEED, u64::from(iip), 0) % u64::from(n_ips)) as u32
                };
                let mut chosen = None;
                for i in 0..n_ips {
                    let pi = ((start + i) % n_ips) as usize;
                    let Some(&pip) = public_ips.get(pi) else {
                        continue;
                    };
                    if ip_state.get(pi) != Some(&ip_st::ACTIVE) {
                        // Draining (live reload): its mappings serve on, no new ones.
                        continue;
                    }
                    let pub_u = u32::from(pip);
                    let taken = &*eim;
                    let port = ports.allocate_any(rng, |p, preferred| {
                        taken.lookup_public(proto, pub_u, p).is_none()
                            && (!preferred
                                || steer.is_none_or(|s| {
                                    s.steers_to(
                                        worker,
                                        proto != IPPROTO_ICMP,
                                        remote.0,
                                        remote.1,
                                        pip,
                                        p,
                                    )
                                }))
                    });
                    if let Some(p) = port {
                        chosen = Some((pub_u, p));
                        break;
                    }
                }
                let Some((public_ip, public_port)) = chosen else {
                    c.port_allocation_errors += 1;
                    return Err(DropReason::NatPortExhausted);
                };
                eim.insert(Mapping {
                    inside_ip: iip,
                    public_ip,
                    refs: 0,
                    inside_port: inside.1,
                    public_port,
                    proto,
                })
                .ok_or(DropReason::NatTableFull)?
            }
        };
        let m = eim.get(m_idx).copied().ok_or(DropReason::NatTableFull)?;
        let f = Flow {
            inside_ip: iip,
            remote_ip: u32::from(remote.0),
            public_ip: m.public_ip,
            inside_port: inside.1,
            remote_port: remote.1,
            public_port: m.public_port,
            proto,
            state: state | st::ALLOWS,
            ..Flow::default()
        };
        self.bind(c, m_idx, f, t)
    }
}

impl NatWorker {
    /// `Some(owner)` when outbound traffic from `src` belongs to another worker
    /// (`rfc4787` gateways with several workers only).
    #[inline]
    pub(super) fn inside_handoff(&self, gi: usize, src: Ipv4Addr) -> Option<usize> {
        if self.n_workers < 2 {
            return None;
        }
        self.gws.get(gi)?.eim.as_ref()?;
        let o = inside_owner(src, self.n_workers);
        (o != self.worker).then_some(o)
    }

    /// The gateway translating `src` if it is in `rfc4787` mode (so a packet from `src` to
    /// a public IP is hairpinned).
    #[inline]
    pub(super) fn hairpin_source(&self, src: Ipv4Addr) -> Option<usize> {
        let gs = self
            .gws
            .iter()
            .position(|g| g.inside.iter().any(|p| p.contains(src)))?;
        self.gws.get(gs)?.eim.as_ref().map(|_| gs)
    }

    /// An inside host of gateway `gs` sends to a public IP of gateway `gd`.
    pub(super) fn hairpin<B: PacketBuf>(
        &mut self,
        gs: usize,
        gd: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> NatVerdict {
        if ip.proto == IPPROTO_ICMP && !ip.is_later_fragment() {
            let ty = pkt.data().get(14 + ip.hl).copied().unwrap_or(0);
            if !icmp_error::is_translated_error(ty) {
                // An echo request to a public IP reaches no inside endpoint (unsolicited,
                // as from outside); no mapping is made for it.
                return self.out2in(gd, pkt, ip, t);
            }
        }
        match self.in2out(gs, pkt, ip, t) {
            NatVerdict::Translated => {}
            v => return v,
        }
        let Some(ip2) = Ip::parse(pkt.data()) else {
            return self.drop(gd, DropReason::NatNoMapping);
        };
        self.out2in(gd, pkt, &ip2, t)
    }

    /// An inbound packet with no flow of its own (`k` is its outside key). `rfc4787`
    /// gateways: if its public endpoint is mapped and the inside endpoint has sent to the
    /// packet's source IP, a new flow bound to that mapping when `opens` (TCP SYN, UDP),
    /// in `state`; `NatFiltered` from an IP it has not sent to. Otherwise `NatNoMapping`.
    pub(super) fn inbound_new(
        &mut self,
        gi: usize,
        k: &Key,
        opens: bool,
        state: u8,
        t: u32,
    ) -> Result<u32, DropReason> {
        let now = self.now;
        let NatWorker { gws, counters, .. } = self;
        let (Some(g), Some(c)) = (gws.get_mut(gi), counters.get_mut(gi)) else {
            return Err(DropReason::NatNoMapping);
        };
        let Some(eim) = g.eim.as_ref() else {
            return Err(DropReason::NatNoMapping);
        };
        let m_idx = eim
            .lookup_public(k.proto, k.local_ip, k.local_port)
            .ok_or(DropReason::NatNoMapping)?;
        if !eim.allowed(k.proto, k.local_ip, k.local_port, k.remote_ip) {
            return Err(DropReason::NatFiltered);
        }
        if !opens {
            return Err(DropReason::NatNoMapping);
        }
        let m = eim.get(m_idx).copied().ok_or(DropReason::NatNoMapping)?;
        // A flow opened from outside counts against the tenant's limits like any other.
        g.limiter
            .new_flow(c.active_connections, now)
            .map_err(|r| r.nat())?;
        c.connection_attempts += 1;
        if g.flows.len() >= g.flows.capacity() {
            return Err(DropReason::NatTableFull);
        }
        let f = Flow {
            inside_ip: m.inside_ip,
            remote_ip: k.remote_ip,
            public_ip: m.public_ip,
            inside_port: m.inside_port,
            remote_port: k.remote_port,
            public_port: m.public_port,
            proto: k.proto,
            state,
            ..Flow::default()
        };
        let idx = g.bind(c, m_idx, f, t)?;
        if self.repl.is_some() {
            self.replicate(gi, idx, crate::repl::EV_ADD);
        }
        Ok(idx)
    }

    /// The inside endpoint sent on flow `idx`: from now on it permits its remote IP
    /// (`rfc4787` gateways; a no-op once done and in `aws` mode).
    #[inline]
    pub(super) fn outbound_seen(&mut self, gi: usize, idx: u32) {
        let Some(g) = self.gws.get_mut(gi) else {
            return;
        };
        let Gateway { eim, flows, .. } = g;
        let (Some(e), Some(f)) = (eim.as_mut(), flows.get_mut(idx)) else {
            return;
        };
        if f.state & st::ALLOWS == 0 && e.permit(f) {
            f.state |= st::ALLOWS;
        }
    }
}
