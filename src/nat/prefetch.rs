//! Burst lookahead for the flow table (issue 11, VPP-style): while packet i is translated,
//! packet i + 4's index bucket and packet i + 2's flow entry are already being loaded, so
//! at a million flows the two dependent cache misses of a lookup overlap with work instead
//! of stalling it. Only a hint: it reads the frame and the table and changes nothing but
//! its own small ring; anything it cannot classify cheaply (fragments, ICMP, options, no
//! gateway) is skipped. Off while the worker has few flows (`worth_it`): then the
//! tables are in cache and there is nothing to hide.
use super::flow::{hash_key, Key};
use super::NatWorker;

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
    /// The packet's id (`Pipeline::handle_burst`); 0 = empty.
    frame: usize,
    gateway: u32,
    outside: bool,
    hash: u64,
}

/// (proto, src, sport, dst, dport) of an unfragmented TCP/UDP packet, from the
/// pipeline's parsed descriptor (`Parsed::tuple`).
pub type Tuple = (u8, u32, u16, u32, u16);

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
    pub fn prefetch(&mut self, id: usize, tuple: Option<Tuple>, deep: bool) {
        if !self.lookahead {
            return;
        }
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
        let Some((proto, src, sport, dst, dport)) = tuple else {
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
