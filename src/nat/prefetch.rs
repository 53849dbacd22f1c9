//! Burst lookahead for the flow table (issue 11, VPP-style): while packet i is translated,
//! packet i + 4's index bucket and packet i + 2's flow entry are already being loaded, so
//! at a million flows the two dependent cache misses of a lookup overlap with work instead
//! of stalling it. Only a hint: it reads the frame and the table and changes nothing but
//! its own small ring; anything it cannot classify cheaply (fragments, ICMP, options, no
//! gateway) is skipped. Off while the worker has few flows (`worth_it`): then the
//! tables are in cache and there is nothing to hide.
use super::flow::{hash_key, Key};
use super::NatWorker;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

/// Below this many live flows (per worker) the tables' hot lines stay in the L2/L3 cache
/// and the lookahead's own work (~170 instructions a packet) would cost more than the
/// misses it hides: at 10k flows it measured ~+15 % time per packet, at 1M -60 %.
const LOOKAHEAD_MIN_FLOWS: usize = 32 * 1024;

pub(crate) fn worth_it(live_flows: usize) -> bool {
    live_flows >= LOOKAHEAD_MIN_FLOWS
}

/// Lookahead entries remembered between the bucket and the entry stage.
pub(super) const LOOK: usize = 8;

/// What the bucket stage computed for one frame, so that the entry stage does not parse
/// and hash it again.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Look {
    /// The frame's address (identity only, never dereferenced); 0 = empty.
    frame: usize,
    gateway: u32,
    outside: bool,
    hash: u64,
}

/// (proto, src, sport, dst, dport) of an unfragmented TCP/UDP IPv4 packet without
/// options, read with bounds checks only (the pipeline validates it later, for real).
#[inline(always)]
pub(crate) fn tuple(frame: &[u8]) -> Option<(u8, u32, u16, u32, u16)> {
    let h = frame.get(12..38)?;
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    // Ethertype IPv4, version 4 / IHL 5, no MF, offset 0, TCP or UDP.
    let proto = h[11];
    let ok = h[0] == 0x08
        && h[1] == 0
        && h[2] == 0x45
        && (h[8] & 0x3f) == 0
        && h[9] == 0
        && (proto == IPPROTO_TCP || proto == IPPROTO_UDP);
    ok.then(|| {
        (
            proto,
            be32(14),
            u16::from_be_bytes([h[22], h[23]]),
            be32(18),
            u16::from_be_bytes([h[24], h[25]]),
        )
    })
}

impl NatWorker {
    /// Whether the lookahead is on (asked once per burst, so that an idle lookahead costs
    /// nothing per packet).
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        self.lookahead
    }

    /// Bucket stage (`deep` false): classify, hash, prefetch the index bucket, remember.
    /// Entry stage (`deep` true, same frame later): prefetch the flow entries whose
    /// signature matches (the bucket should be in cache by now).
    #[inline]
    pub fn prefetch(&mut self, frame: &[u8], deep: bool) {
        if !self.lookahead {
            return;
        }
        let id = frame.as_ptr() as usize;
        if deep {
            // Newest first: a stale entry of an earlier burst may share the address.
            for k in 1..=LOOK {
                let l = self.look[(self.look_pos + LOOK - k) % LOOK];
                if l.frame == id {
                    if let Some(g) = self.gws.get(l.gateway as usize) {
                        g.flows.prefetch_entry(l.outside, l.hash);
                    }
                    return;
                }
            }
            return;
        }
        let Some((proto, src, sport, dst, dport)) = tuple(frame) else {
            return;
        };
        let (gateway, outside, k) = if let Some(&gi) = self.public.get(&dst) {
            (
                gi,
                true,
                Key {
                    proto,
                    local_ip: dst,
                    local_port: dport,
                    remote_ip: src,
                    remote_port: sport,
                },
            )
        } else if let Some(gi) = self
            .gws
            .iter()
            .position(|g| g.inside.iter().any(|p| p.contains(src.into())))
        {
            (
                gi,
                false,
                Key {
                    proto,
                    local_ip: src,
                    local_port: sport,
                    remote_ip: dst,
                    remote_port: dport,
                },
            )
        } else {
            return;
        };
        let Some(g) = self.gws.get(gateway) else {
            return;
        };
        let hash = hash_key(g.flows.seed(), &k);
        g.flows.prefetch_bucket(outside, hash);
        self.look[self.look_pos] = Look {
            frame: id,
            gateway: gateway as u32,
            outside,
            hash,
        };
        self.look_pos = (self.look_pos + 1) % LOOK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_reads_plain_tcp_udp_only() {
        let mut f = vec![0u8; 64];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = IPPROTO_UDP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[192, 0, 2, 1]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(tuple(&f), Some((17, 0x0a00_0001, 1234, 0xc000_0201, 53)));
        let mut frag = f.clone();
        frag[20] = 0x20; // MF
        assert_eq!(tuple(&frag), None);
        let mut icmp = f.clone();
        icmp[23] = 1;
        assert_eq!(tuple(&icmp), None);
        let mut opts = f.clone();
        opts[14] = 0x46;
        assert_eq!(tuple(&opts), None);
        assert_eq!(tuple(&f[..30]), None);
    }
}
