//! Handoff rings: the only way a packet crosses cores.
//!
//! One bounded lock-free ring per (producer worker, consumer worker) pair. The producer
//! counts what it sends (`handoff_sent`) and what the full ring refused (drop reason
//! `handoff_full`); the consumer counts what it takes (`handoff_received`).

use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// Slots per ring: a few bursts.
pub const HANDOFF_RING_SIZE: usize = 1024;

/// The rings between `n` workers: `ring(from, to)`.
pub struct HandoffMesh<T> {
    n: usize,
    rings: Vec<Arc<ArrayQueue<T>>>,
}

impl<T> HandoffMesh<T> {
    pub fn new(n: usize, size: usize) -> Self {
        HandoffMesh {
            n,
            rings: (0..n * n)
                .map(|_| Arc::new(ArrayQueue::new(size)))
                .collect(),
        }
    }

    /// The ring worker `from` pushes into for worker `to`.
    pub fn ring(&self, from: usize, to: usize) -> Arc<ArrayQueue<T>> {
        self.rings[from * self.n + to].clone()
    }

    /// Everything worker `w` needs: its outbound rings (indexed by destination; its own
    /// slot unused) and inbound rings (indexed by source).
    pub fn endpoints(&self, w: usize) -> HandoffEndpoints<T> {
        HandoffEndpoints {
            out: (0..self.n).map(|to| self.ring(w, to)).collect(),
            inbound: (0..self.n)
                .filter(|&from| from != w)
                .map(|from| self.ring(from, w))
                .collect(),
        }
    }
}

pub struct HandoffEndpoints<T> {
    pub out: Vec<Arc<ArrayQueue<T>>>,
    pub inbound: Vec<Arc<ArrayQueue<T>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_connect_pairs_and_are_bounded() {
        let mesh: HandoffMesh<u32> = HandoffMesh::new(2, 2);
        let e0 = mesh.endpoints(0);
        let e1 = mesh.endpoints(1);
        assert!(e0.out[1].push(7).is_ok());
        assert!(e0.out[1].push(8).is_ok());
        assert_eq!(e0.out[1].push(9), Err(9));
        assert_eq!(e1.inbound.len(), 1);
        assert_eq!(e1.inbound[0].pop(), Some(7));
    }
}
