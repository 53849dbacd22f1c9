//! The packet buffer abstraction the pipeline is written against.
//!
//! The data plane runs on DPDK mbufs (`pmd::Mbuf`); unit tests and the pure-Rust stages use
//! `VecBuf`. Both keep headroom in front of the frame so a stage can prepend headers in
//! place (an ICMP error is built in the offending packet's own buffer, no allocation).

/// A single-segment frame with head- and tailroom.
pub trait PacketBuf {
    /// The frame, starting at the Ethernet header.
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    #[inline]
    fn len(&self) -> usize {
        self.data().len()
    }
    #[inline]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn headroom(&self) -> usize;
    fn tailroom(&self) -> usize;
    /// Grow the frame by `n` bytes at the front. False (and unchanged) if no headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Remove `n` bytes from the front. False (and unchanged) if shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Remove `n` bytes from the end. False (and unchanged) if shorter.
    fn trim(&mut self, n: usize) -> bool;
    /// Grow the frame by `n` bytes at the end. False (and unchanged) if no tailroom.
    fn append(&mut self, n: usize) -> bool;
    /// Set the frame length (shrink, or grow into tailroom). False if impossible.
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        let cur = self.len();
        if len <= cur {
            self.trim(cur - len)
        } else {
            self.append(len - cur)
        }
    }
    /// RSS hash the NIC computed, if any (0 otherwise).
    fn rss_hash(&self) -> u32 {
        0
    }
    /// Port the packet was received on (kept across a handoff to another worker).
    fn rx_port(&self) -> u16 {
        0
    }
    /// A hint: start loading the frame's first cache line (burst lookahead).
    #[inline]
    fn prefetch(&self) {}
}

/// Where the slow path gets new buffers (ARP requests, IP fragments).
pub trait BufAlloc {
    type Buf: PacketBuf;
    fn alloc(&mut self) -> Option<Self::Buf>;
}

/// Headroom every buffer kept by `VecBuf` (matches DPDK's RTE_PKTMBUF_HEADROOM).
pub const HEADROOM: usize = 128;

/// A heap buffer with DPDK-like head/tailroom, for tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecBuf {
    /// An empty buffer with `room` bytes of data room after the headroom.
    pub fn with_room(room: usize) -> Self {
        VecBuf {
            buf: vec![0; HEADROOM + room],
            start: HEADROOM,
            end: HEADROOM,
        }
    }
    /// A buffer holding `frame`, with headroom and 10 KiB of total data room.
    pub fn from_frame(frame: &[u8]) -> Self {
        let mut b = VecBuf::with_room(frame.len().max(10240));
        b.append(frame.len());
        b.data_mut().copy_from_slice(frame);
        b
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn headroom(&self) -> usize {
        self.start
    }
    fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn trim(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.end -= n;
        true
    }
    fn append(&mut self, n: usize) -> bool {
        if n > self.buf.len() - self.end {
            return false;
        }
        self.end += n;
        true
    }
}

/// Allocates `VecBuf`s (tests and tools only; the data plane uses the mempool).
#[derive(Default)]
pub struct VecAlloc {
    /// Refuse allocation after this many (to test the out-of-buffers paths).
    pub limit: Option<usize>,
    pub allocated: usize,
}

impl BufAlloc for VecAlloc {
    type Buf = VecBuf;
    fn alloc(&mut self) -> Option<VecBuf> {
        if let Some(l) = self.limit {
            if self.allocated >= l {
                return None;
            }
        }
        self.allocated += 1;
        Some(VecBuf::with_room(10240))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vecbuf_room_accounting() {
        let mut b = VecBuf::from_frame(&[1, 2, 3, 4]);
        assert_eq!(b.headroom(), HEADROOM);
        assert!(b.prepend(2));
        assert_eq!(b.len(), 6);
        assert!(b.adj(2));
        assert_eq!(b.data(), &[1, 2, 3, 4]);
        assert!(b.trim(1));
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(!b.trim(4));
        assert!(!b.prepend(HEADROOM + 1));
        assert!(b.set_len(10));
        assert_eq!(b.len(), 10);
    }
}
