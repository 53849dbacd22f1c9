//! Burst lookahead for the flow table (issue 11, VPP-style): while packet i is translated,
//! packet i + 4's index bucket and packet i + 2's flow entry are already being loaded, so
//! at a million flows the two dependent cache misses of a lookup overlap with work instead
//! of stalling it. Only a hint: it reads the frame and the table, changes nothing, and
//! anything it cannot classify cheaply (fragments, ICMP, no gateway) is skipped.
use super::flow::Key;
use super::{Ip, NatWorker};
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

impl NatWorker {
    /// `deep`: the bucket is expected in cache by now: look the flow up and prefetch its
    /// entry; otherwise prefetch the bucket.
    #[inline]
    pub fn prefetch(&self, frame: &[u8], deep: bool) {
        let Some(ip) = Ip::parse(frame) else {
            return;
        };
        if ip.is_fragment() || !(ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) {
            return;
        }
        let Some(l4) = frame.get(14 + ip.hl..14 + ip.hl + 4) else {
            return;
        };
        let sport = u16::from_be_bytes([l4[0], l4[1]]);
        let dport = u16::from_be_bytes([l4[2], l4[3]]);
        if let Some(&gi) = self.public.get(&u32::from(ip.dst)) {
            let Some(g) = self.gws.get(gi) else {
                return;
            };
            let k = Key::new(ip.proto, ip.dst, dport, ip.src, sport);
            if deep {
                g.flows.prefetch_entry_out(&k);
            } else {
                g.flows.prefetch_out(&k);
            }
            return;
        }
        if let Some(g) = self
            .gws
            .iter()
            .find(|g| g.inside.iter().any(|p| p.contains(ip.src)))
        {
            let k = Key::new(ip.proto, ip.src, sport, ip.dst, dport);
            if deep {
                g.flows.prefetch_entry_in(&k);
            } else {
                g.flows.prefetch_in(&k);
            }
        }
    }
}
