//! Burst lookahead for the load balancer's flow lookups (issue 11 item 2), as the NAT's
//! (`nat::prefetch`): while packet i is handled, packet i + 4's index bucket and packet
//! i + 2's flow entry are already being loaded. Client packets (to a VIP) look up the
//! flow table's inside index, full-NAT replies (to an LB address) the `fnat` index, DNAT
//! replies (from a target) the outside index. Only a hint: it reads the frame, the
//! snapshot and the tables, and changes nothing but its own small ring. Off while the
//! worker has few flows (`nat::prefetch::worth_it`: the tables are in cache then).
use super::LbWorker;
use crate::nat::flow::{hash_key, Key};
use crate::nat::prefetch::{worth_it, Tuple};
use crate::pmd::hugemem::prefetch;
use std::net::Ipv4Addr;

/// Lookahead entries remembered between the bucket and the entry stage.
const LOOK: usize = 8;

/// Which index a frame's lookup reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Index {
    #[default]
    In,
    Out,
    Fnat,
}

#[derive(Debug, Clone, Copy, Default)]
struct Look {
    /// The packet's id (`Pipeline::handle_burst`); 0 = empty.
    frame: usize,
    lb: u32,
    index: Index,
    hash: u64,
}

/// The lookahead's state in an `LbWorker`.
#[derive(Debug, Default)]
pub struct LbLook {
    on: bool,
    ring: [Look; LOOK],
    pos: usize,
}

impl LbWorker {
    /// Between bursts: the lookahead pays only with many flows.
    pub fn update_lookahead(&mut self) {
        self.look.on = worth_it(self.flows());
    }

    /// Whether the lookahead is on (asked once per burst).
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        self.look.on
    }

    /// Bucket stage (`deep` false): classify, hash, prefetch the index bucket, remember.
    /// Entry stage (`deep` true, same frame later): prefetch the flow entries (and their
    /// LB metadata) whose signature matches.
    #[inline]
    pub fn prefetch(&mut self, id: usize, tuple: Option<Tuple>, deep: bool) {
        if !self.look.on {
            return;
        }
        if deep {
            for k in 1..=LOOK {
                let l = self.look.ring[(self.look.pos + LOOK - k) % LOOK];
                if l.frame == id {
                    self.prefetch_entry(l);
                    return;
                }
            }
            return;
        }
        let Some(l) = tuple.and_then(|t| self.classify_ahead(id, t)) else {
            return;
        };
        let Some(st) = self.lbs.get(l.lb as usize) else {
            return;
        };
        match l.index {
            Index::In => st.flows.prefetch_bucket(false, l.hash),
            Index::Out => st.flows.prefetch_bucket(true, l.hash),
            Index::Fnat => st.fnat.prefetch(l.hash),
        }
        self.look.ring[self.look.pos] = l;
        self.look.pos = (self.look.pos + 1) % LOOK;
    }

    /// The index and hash the lookup of packet `frame` (5-tuple `t`) will use, as
    /// `classify` will decide it.
    #[inline]
    fn classify_ahead(&self, frame: usize, t: Tuple) -> Option<Look> {
        let (proto, src, sport, dst, dport) = t;
        let snap = self.snap.as_ref()?;
        if let Some(li) = snap.lb_of_vip(Ipv4Addr::from(dst)) {
            let st = self.lbs.get(li)?;
            let k = Key::new(proto, dst.into(), dport, src.into(), sport);
            return Some(Look {
                frame,
                lb: li as u32,
                index: Index::In,
                hash: hash_key(st.flows.seed(), &k),
            });
        }
        if let Some(li) = snap.lb_of_address(Ipv4Addr::from(dst)) {
            let st = self.lbs.get(li)?;
            let k = Key::new(proto, dst.into(), dport, src.into(), sport);
            return Some(Look {
                frame,
                lb: li as u32,
                index: Index::Fnat,
                hash: hash_key(st.seed, &k),
            });
        }
        // A DNAT reply: only with one load balancer (else which table is unknown here).
        if self.lbs.len() == 1 && snap.target_ips.contains(&src) {
            let st = self.lbs.first()?;
            let k = Key::new(proto, src.into(), sport, dst.into(), dport);
            return Some(Look {
                frame,
                lb: 0,
                index: Index::Out,
                hash: hash_key(st.flows.seed(), &k),
            });
        }
        None
    }

    #[inline]
    fn prefetch_entry(&self, l: Look) {
        let Some(st) = self.lbs.get(l.lb as usize) else {
            return;
        };
        match l.index {
            Index::In => st.flows.prefetch_entry(false, l.hash),
            Index::Out => st.flows.prefetch_entry(true, l.hash),
            Index::Fnat => st.fnat.candidates(l.hash, |i| {
                if let Some(f) = st.flows.get(i) {
                    prefetch(f);
                }
                if let Some(m) = st.meta.get(i as usize) {
                    prefetch(m);
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use crate::lb::control::LbControl;
    use crate::packet::{PacketBuf, VecBuf};
    use crate::pipeline::{Parsed, StageVerdict};

    fn tuple(b: &VecBuf) -> Tuple {
        Parsed::read(b.data()).and_then(|p| p.tuple()).unwrap()
    }
    use crate::wire::{Ipv4Packet, UdpPacket};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const LBA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const TARGET: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

    fn worker() -> (LbControl, LbWorker) {
        let yaml = format!(
            "{}  - id: dns
    vips: [198.51.100.10]
    lb_addresses: [198.51.100.11]
    maglev_table_size: 65537
    flows_per_core: 4096
    listeners:
      - {{protocol: udp, port: 53, target_group: dns}}
    target_groups:
      - name: dns
        preserve_client_ip: false
        targets:
          - {{ip: 10.1.0.5, port: 5353}}
",
            crate::lb::tests::CONF_BASE
        );
        let c = parse_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let ctl = LbControl::new(&c.load_balancers, 1_000_000, 0);
        let w = LbWorker::new(&c.load_balancers, ctl.cell(), 0, 1, 1_000_000);
        (ctl, w)
    }

    fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> VecBuf {
        let mut f = vec![0u8; 14 + 20 + 12];
        f[12] = 0x08;
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_version_ihl(5);
            ip.set_total_len(32);
            ip.set_ttl(64);
            ip.set_protocol(crate::wire::IPPROTO_UDP);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
        }
        {
            let mut u = UdpPacket::new_unchecked(&mut f[34..]);
            u.set_src_port(sp);
            u.set_dst_port(dp);
            u.set_len(12);
            u.fill_checksum(src, dst);
        }
        VecBuf::from_frame(&f)
    }

    #[test]
    fn lookahead_hashes_what_the_lookups_use_and_changes_nothing() {
        let (_c, mut w) = worker();
        w.update_lookahead();
        assert!(!w.wants_lookahead(), "off with few flows");
        w.look.on = true;
        let mut b = udp(CLIENT, 5000, VIP, 53);
        let ahead = w
            .classify_ahead(1, tuple(&b))
            .expect("client packet classified");
        let k = Key::new(17, VIP, 53, CLIENT, 5000);
        assert_eq!(ahead.index, Index::In);
        assert_eq!(ahead.hash, hash_key(w.lbs[0].flows.seed(), &k));
        w.prefetch(1, Some(tuple(&b)), false);
        w.prefetch(1, None, true);
        assert_eq!(w.process(&mut b, 1), StageVerdict::Translated);
        let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
        let lport = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
        // The full-NAT reply: classified to the fnat index, whose lookup finds the flow.
        let mut r = udp(TARGET, 5353, LBA, lport);
        let ahead = w.classify_ahead(2, tuple(&r)).expect("reply classified");
        assert_eq!(ahead.index, Index::Fnat);
        let st = &w.lbs[0];
        let mut found = 0;
        st.fnat.candidates(ahead.hash, |_| found += 1);
        assert_eq!(found, 1, "the reply's bucket holds the flow");
        w.prefetch(2, Some(tuple(&r)), false);
        w.prefetch(2, None, true);
        assert_eq!(w.process(&mut r, 2), StageVerdict::Translated);
        let ip = Ipv4Packet::new_checked(&r.data()[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (VIP, CLIENT));
        // Other traffic is not classified.
        let other = udp(CLIENT, 1, Ipv4Addr::new(192, 0, 2, 1), 2);
        assert!(w.classify_ahead(3, tuple(&other)).is_none());
    }
}
