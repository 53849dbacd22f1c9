//! Handoff rings: the only way a packet crosses cores.
//!
//! One bounded single-producer/single-consumer ring (`rtrb`) per (producer worker,
//! consumer worker) pair, so no compare-and-swap anywhere: the producer owns the tail, the
//! consumer the head, each on its own cache line. Packets are staged per destination
//! during a burst and enqueued in bulk by `HandoffOut::flush` (one tail store per ring
//! and burst instead of one contended CAS per packet); the consumer takes a whole chunk
//! per poll (one head store per ring and poll).
//!
//! Nothing a worker writes shares a cache line with another worker's state: each ring end
//! (the rtrb producer or consumer with its cached indexes, and the staging slots) is
//! `CachePadded` (128 bytes on x86_64, the adjacent-line prefetcher's pair), so the
//! vectors holding them, allocated by the control thread next to other workers' data,
//! start and end on line boundaries. The only lines two workers both touch are the
//! ring's own head, tail (each padded by rtrb) and slots: the handoff itself.
//!
//! Counting is exact even though enqueueing is deferred: `push` accepts a packet only
//! when the ring has room for it and everything already staged (the consumer only ever
//! frees slots), so a staged packet is never refused at flush. The producer counts what
//! it sends (`handoff_sent`) and what the full ring refused (drop reason
//! `handoff_full`); the consumer counts what it takes (`handoff_received`).

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::Mutex;

/// Slots per ring: a few bursts.
pub const HANDOFF_RING_SIZE: usize = 1024;

/// Packets staged per destination before `push` flushes that ring itself (a burst).
pub const HANDOFF_STAGE: usize = 32;

/// A ring's two ends until `endpoints` hands them to their workers.
type RingEnds<T> = (Option<Producer<T>>, Option<Consumer<T>>);

/// The rings between `n` workers, handed out once per worker by `endpoints`.
pub struct HandoffMesh<T> {
    n: usize,
    /// Ring `from * n + to`: its producer (taken by `from`) and consumer (taken by `to`).
    /// The lock is only taken at setup, by `endpoints`.
    ends: Mutex<Vec<RingEnds<T>>>,
}

impl<T> HandoffMesh<T> {
    pub fn new(n: usize, size: usize) -> Self {
        HandoffMesh {
            n,
            ends: Mutex::new(
                (0..n * n)
                    .map(|_| {
                        let (p, c) = RingBuffer::new(size);
                        (Some(p), Some(c))
                    })
                    .collect(),
            ),
        }
    }

    /// Everything worker `w` needs: its outbound rings (indexed by destination; its own
    /// slot unused) and inbound rings (one per other worker). Each worker's ends can be
    /// taken once (single producer, single consumer); a second call gets no rings.
    pub fn endpoints(&self, w: usize) -> HandoffEndpoints<T> {
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        let out = (0..self.n)
            .map(|to| {
                let ring = if to == w {
                    None
                } else {
                    ends[w * self.n + to].0.take()
                };
                ring.map(|ring| {
                    CachePadded::new(Outbound {
                        ring,
                        staged: ArrayVec::new(),
                    })
                })
            })
            .collect();
        let inbound = (0..self.n)
            .filter(|&from| from != w)
            .filter_map(|from| ends[from * self.n + w].1.take())
            .map(CachePadded::new)
            .collect();
        HandoffEndpoints {
            out: HandoffOut { rings: out },
            inbound: HandoffIn { rings: inbound },
        }
    }
}

/// One worker's ends of the mesh.
pub struct HandoffEndpoints<T> {
    pub out: HandoffOut<T>,
    pub inbound: HandoffIn<T>,
}

struct Outbound<T> {
    ring: Producer<T>,
    /// Accepted by `push`, enqueued by `flush`; never more than the ring has room for.
    /// Inline (not a heap Vec) so it lies inside this end's padding.
    staged: ArrayVec<T, HANDOFF_STAGE>,
}

impl<T> Outbound<T> {
    fn flush(&mut self) {
        let n = self.staged.len();
        if n == 0 {
            return;
        }
        // Cannot fail: `push` reserved the room. Were it ever to, the packets left are
        // dropped by `clear` (an mbuf is freed by its Drop), never leaked.
        if let Ok(chunk) = self.ring.write_chunk_uninit(n) {
            chunk.fill_from_iter(self.staged.drain(..));
        }
        self.staged.clear();
    }
}

/// The producer side: one staged ring per destination worker.
pub struct HandoffOut<T> {
    rings: Vec<Option<CachePadded<Outbound<T>>>>,
}

impl<T> HandoffOut<T> {
    /// Accept `pkt` for worker `to` (enqueued at the next `flush`), or give it back when
    /// that ring has no room (or there is no such ring).
    #[inline]
    pub fn push(&mut self, to: usize, pkt: T) -> Result<(), T> {
        let Some(o) = self.rings.get_mut(to).and_then(|o| o.as_mut()) else {
            return Err(pkt);
        };
        let o: &mut Outbound<T> = o;
        let staged = o.staged.len();
        // The cached free count only grows when refreshed from the consumer's head, so
        // the shared line is read only when the ring looks full.
        if staged >= o.ring.cached_slots() && staged >= o.ring.slots() {
            return Err(pkt);
        }
        if staged == HANDOFF_STAGE {
            o.flush();
        }
        o.staged.try_push(pkt).map_err(|e| e.element())
    }

    /// Enqueue everything staged: one bulk write per ring that has packets.
    #[inline]
    pub fn flush(&mut self) {
        for o in self.rings.iter_mut().flatten() {
            o.flush();
        }
    }
}

/// The consumer side: one ring per other worker.
pub struct HandoffIn<T> {
    rings: Vec<CachePadded<Consumer<T>>>,
}

impl<T> HandoffIn<T> {
    /// Take up to `max` packets from each inbound ring (one chunk per ring), calling `f`
    /// on each; returns how many were taken.
    #[inline]
    pub fn poll(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut got = 0;
        for ring in self.rings.iter_mut().map(|r| &mut **r) {
            let n = ring.slots().min(max);
            if n == 0 {
                continue;
            }
            if let Ok(chunk) = ring.read_chunk(n) {
                chunk.into_iter().for_each(&mut f);
                got += n;
            }
        }
        got
    }

    /// Number of inbound rings (other workers).
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_connect_pairs_and_are_bounded() {
        let mesh: HandoffMesh<u32> = HandoffMesh::new(2, 2);
        let mut e0 = mesh.endpoints(0);
        let mut e1 = mesh.endpoints(1);
        assert!(e0.out.push(1, 7).is_ok());
        assert!(e0.out.push(1, 8).is_ok());
        // Room is reserved for staged packets: the third is refused before any flush.
        assert_eq!(e0.out.push(1, 9), Err(9));
        // No ring to oneself.
        assert_eq!(e0.out.push(0, 5), Err(5));
        assert_eq!(e1.inbound.len(), 1);
        let mut got = vec![];
        assert_eq!(
            e1.inbound.poll(32, |p| got.push(p)),
            0,
            "nothing before flush"
        );
        e0.out.flush();
        assert_eq!(e1.inbound.poll(1, |p| got.push(p)), 1);
        assert_eq!(got, vec![7]);
        // The consumer freed a slot: one more fits.
        assert!(e0.out.push(1, 10).is_ok());
        assert_eq!(e0.out.push(1, 11), Err(11));
        e0.out.flush();
        assert_eq!(e1.inbound.poll(32, |p| got.push(p)), 2);
        assert_eq!(got, vec![7, 8, 10]);
        // Ends are handed out once.
        let again = mesh.endpoints(1);
        assert!(again.inbound.is_empty());
    }

    #[test]
    fn bursts_cross_in_order_and_staging_flushes_itself() {
        let mesh: HandoffMesh<u32> = HandoffMesh::new(3, 256);
        let mut e2 = mesh.endpoints(2);
        let mut e0 = mesh.endpoints(0);
        // More than a stage's worth without an explicit flush: the stage flushes itself.
        for i in 0..(HANDOFF_STAGE as u32 + 5) {
            e2.out.push(0, i).unwrap();
        }
        let mut got = vec![];
        assert_eq!(e0.inbound.poll(64, |p| got.push(p)), HANDOFF_STAGE);
        e2.out.flush();
        e0.inbound.poll(64, |p| got.push(p));
        assert_eq!(got, (0..HANDOFF_STAGE as u32 + 5).collect::<Vec<_>>());
    }

    #[test]
    fn ring_ends_own_whole_cache_lines() {
        // Elements aligned to and sized in multiples of the line pair, so the vectors
        // (allocated next to other workers' data) share no line with anything.
        for (size, align) in [
            (
                std::mem::size_of::<Option<CachePadded<Outbound<u64>>>>(),
                std::mem::align_of::<Option<CachePadded<Outbound<u64>>>>(),
            ),
            (
                std::mem::size_of::<CachePadded<Consumer<u64>>>(),
                std::mem::align_of::<CachePadded<Consumer<u64>>>(),
            ),
        ] {
            assert!(align >= 64 && size % 64 == 0, "size {size} align {align}");
        }
        let mesh: HandoffMesh<u64> = HandoffMesh::new(2, 16);
        let e0 = mesh.endpoints(0);
        assert_eq!(e0.out.rings.as_ptr() as usize % 64, 0);
        assert_eq!(e0.inbound.rings.as_ptr() as usize % 64, 0);
    }

    #[test]
    fn across_threads_nothing_lost_or_duplicated() {
        let mesh: HandoffMesh<u64> = HandoffMesh::new(2, 64);
        let mut e0 = mesh.endpoints(0);
        let mut e1 = mesh.endpoints(1);
        const N: u64 = 20_000;
        let producer = std::thread::spawn(move || {
            let (mut sent, mut full) = (0u64, 0u64);
            let mut next = 0;
            while next < N {
                for _ in 0..32 {
                    if next == N {
                        break;
                    }
                    match e0.out.push(1, next) {
                        Ok(()) => {
                            sent += 1;
                            next += 1;
                        }
                        Err(_) => full += 1,
                    }
                }
                e0.out.flush();
            }
            (sent, full)
        });
        let mut expect = 0;
        while expect < N {
            e1.inbound.poll(32, |v| {
                assert_eq!(v, expect);
                expect += 1;
            });
        }
        let (sent, _full) = producer.join().unwrap();
        assert_eq!(sent, N);
    }
}
