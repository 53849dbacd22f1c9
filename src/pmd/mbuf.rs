//! Owned mbufs, rx bursts, per-port TX buffers with bulk free.
use super::ffi;
use super::Mempool;
use crate::packet::{BufAlloc, PacketBuf};
use std::ptr::NonNull;

/// Packets per rx/tx burst (l3fwd's MAX_PKT_BURST).
pub const BURST: usize = 32;

/// An owned single-segment mbuf. Dropping it returns it to its pool.
pub struct Mbuf {
    ptr: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving it between threads moves
// ownership (the mempool is thread-safe for the free).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// # Safety
    /// `ptr` must be a valid mbuf owned by the caller, which gives up ownership.
    #[inline]
    pub unsafe fn from_raw(ptr: *mut ffi::rte_mbuf) -> Mbuf {
        Mbuf {
            // SAFETY: the caller guarantees a valid, non-null mbuf.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
        }
    }

    #[inline]
    pub fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    #[inline]
    fn m(&self) -> &ffi::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole lifetime.
        unsafe { self.ptr.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut ffi::rte_mbuf {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { self.ptr.as_mut() }
    }

    /// Number of segments; the pipeline only handles 1 (mempools hold jumbo frames whole).
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }

    /// Port the mbuf was received on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// Hint the CPU to fetch the first cache line of packet data.
    #[inline]
    pub fn prefetch_data(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.data().as_ptr();
            // SAFETY: prefetch is a hint; any address is allowed.
            unsafe {
                std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
            };
        }
    }
}

impl Mbuf {
    /// Copies a chained mbuf (scatter rx) into one buffer from `pool`, whose data room
    /// holds the whole frame; the chain is freed. `None` (the chain freed too) when the
    /// pool is empty or its buffers are too small. The slow path of jumbo frames received
    /// into small buffers: the pipeline then works on one contiguous frame.
    pub fn linearize(self, pool: Mempool) -> Option<Mbuf> {
        let total = self.m().pkt_len as usize;
        // SAFETY: the pool is valid for the life of the data plane.
        let p = unsafe { ffi::rte_pktmbuf_alloc(pool.as_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: a freshly allocated mbuf is ours.
        let mut out = unsafe { Mbuf::from_raw(p) };
        if total > u16::MAX as usize || !out.append(total) {
            return None;
        }
        let mut off = 0;
        let mut seg: *const ffi::rte_mbuf = self.ptr.as_ptr();
        {
            let dst = out.data_mut();
            while !seg.is_null() && off < total {
                // SAFETY: `seg` is a segment of the chain `self` owns (the head, then
                // each `next` until null); nothing else touches it meanwhile.
                let s = unsafe { &*seg };
                let n = (s.data_len as usize).min(total - off);
                // SAFETY: buf_addr + data_off .. + data_len lies inside the segment's buffer.
                let src = unsafe {
                    std::slice::from_raw_parts(
                        (s.buf_addr as *const u8).add(s.data_off as usize),
                        n,
                    )
                };
                dst[off..off + n].copy_from_slice(src);
                off += n;
                seg = s.next;
            }
        }
        if off != total {
            return None;
        }
        let (port, flags, hash) = {
            let m = self.m();
            // SAFETY: reading a u32 from a plain-data union is always defined.
            (m.port, m.ol_flags, unsafe { m.__bindgen_anon_2.hash.rss })
        };
        let o = out.m_mut();
        o.port = port;
        o.ol_flags = flags;
        o.__bindgen_anon_2.hash.rss = hash;
        Some(out)
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; freeing returns every segment to its pool.
        unsafe { ffi::rte_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn prefetch(&self) {
        self.prefetch_data();
    }
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's data buffer.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in data(); &mut self gives exclusive access to the bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.m().data_off as usize
    }
    #[inline]
    fn tailroom(&self) -> usize {
        let m = self.m();
        m.buf_len as usize - m.data_off as usize - m.data_len as usize
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.headroom() {
            return false;
        }
        let m = self.m_mut();
        m.data_off -= n as u16;
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        let m = self.m_mut();
        m.data_off += n as u16;
        m.data_len -= n as u16;
        m.pkt_len -= n as u32;
        true
    }
    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        let m = self.m_mut();
        m.data_len -= n as u16;
        m.pkt_len -= n as u32;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if n > self.tailroom() {
            return false;
        }
        let m = self.m_mut();
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn rx_port(&self) -> u16 {
        self.m().port
    }
    #[inline]
    fn rss_hash(&self) -> u32 {
        let m = self.m();
        // SAFETY: reading a u32 from a plain-data union is always defined.
        if m.ol_flags & unsafe { ffi::FG_MBUF_F_RX_RSS_HASH } != 0 {
            // SAFETY: the NIC set RX_RSS_HASH, so the `rss` member is the one written.
            unsafe { m.__bindgen_anon_2.hash.rss }
        } else {
            0
        }
    }
}

/// Allocates mbufs from a mempool (slow path only: ARP requests, IP fragments).
#[derive(Clone, Copy)]
pub struct MbufAlloc {
    pub pool: Mempool,
}

impl BufAlloc for MbufAlloc {
    type Buf = Mbuf;
    fn alloc(&mut self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the life of the data plane.
        let p = unsafe { ffi::rte_pktmbuf_alloc(self.pool.as_ptr()) };
        if p.is_null() {
            None
        } else {
            // SAFETY: a freshly allocated mbuf is ours.
            Some(unsafe { Mbuf::from_raw(p) })
        }
    }
}

/// One rx burst: up to BURST mbufs received with a single FFI call.
pub struct RxBurst {
    ptrs: [*mut ffi::rte_mbuf; BURST],
    len: usize,
    next: usize,
}

impl Default for RxBurst {
    fn default() -> Self {
        RxBurst {
            ptrs: [std::ptr::null_mut(); BURST],
            len: 0,
            next: 0,
        }
    }
}

impl RxBurst {
    /// Receive up to `max` (<= BURST) packets from (port, queue). Any packets not yet
    /// taken from a previous burst are freed first.
    #[inline]
    pub fn rx(&mut self, port: u16, queue: u16, max: usize) -> usize {
        self.free_rest();
        // SAFETY: ptrs has room for BURST pointers and max <= BURST; the PMD writes
        // `n` valid mbuf pointers whose ownership passes to us.
        let n = unsafe {
            ffi::rte_eth_rx_burst(port, queue, self.ptrs.as_mut_ptr(), max.min(BURST) as u16)
        };
        self.len = n as usize;
        self.next = 0;
        self.len
    }

    /// Take the next received packet.
    #[inline]
    pub fn take(&mut self) -> Option<Mbuf> {
        if self.next < self.len {
            let p = self.ptrs[self.next];
            self.next += 1;
            // SAFETY: every pointer in 0..len came from rx_burst and is taken once.
            Some(unsafe { Mbuf::from_raw(p) })
        } else {
            None
        }
    }

    /// The data of packet `i` positions ahead of the next one (burst lookahead).
    #[inline]
    pub fn data_ahead(&self, i: usize) -> Option<&[u8]> {
        let k = self.next + i;
        if k >= self.len {
            return None;
        }
        // SAFETY: the pointer is a valid received mbuf not yet taken (owned by this
        // burst, so alive while &self is borrowed); its first segment's data is
        // data_len bytes at buf_addr + data_off.
        unsafe {
            let m = &*self.ptrs[k];
            let p = (m.buf_addr as *const u8).add(m.data_off as usize);
            Some(std::slice::from_raw_parts(p, m.data_len as usize))
        }
    }

    /// Peek at packet `i` positions ahead of the next one (for prefetching).
    #[inline]
    pub fn prefetch_ahead(&self, i: usize) {
        let k = self.next + i;
        if k < self.len {
            // SAFETY: the pointer is a valid received mbuf not yet taken; we only read
            // its header fields to compute the prefetch address.
            let m = unsafe { &*self.ptrs[k] };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: prefetch is a hint; any address is allowed.
            unsafe {
                let p = (m.buf_addr as *const u8).add(m.data_off as usize);
                std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
            }
        }
    }

    fn free_rest(&mut self) {
        if self.next < self.len {
            // SAFETY: pointers next..len are owned and untaken; freed once in bulk.
            unsafe {
                ffi::rte_pktmbuf_free_bulk(
                    self.ptrs.as_mut_ptr().add(self.next),
                    (self.len - self.next) as u32,
                )
            };
        }
        self.len = 0;
        self.next = 0;
    }
}

impl Drop for RxBurst {
    fn drop(&mut self) {
        self.free_rest();
    }
}

/// A per-(port, queue) transmit buffer: packets accumulate and go out in one tx burst
/// when BURST are queued or the worker's drain timer fires (l3fwd style).
pub struct TxBuffer {
    pub port: u16,
    pub queue: u16,
    ptrs: [*mut ffi::rte_mbuf; BURST],
    len: usize,
}

// SAFETY: a TxBuffer is owned by one worker; the mbufs it holds are owned by it.
unsafe impl Send for TxBuffer {}

/// Result of a flush: packets the PMD accepted and packets it refused (freed, counted).
#[derive(Debug, Default, Clone, Copy)]
pub struct TxResult {
    pub sent: u32,
    pub dropped: u32,
}

impl TxBuffer {
    pub fn new(port: u16, queue: u16) -> Self {
        TxBuffer {
            port,
            queue,
            ptrs: [std::ptr::null_mut(); BURST],
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue a packet; transmits the buffer when it is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> TxResult {
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        if self.len == BURST {
            self.flush()
        } else {
            TxResult::default()
        }
    }

    /// Transmit everything queued; what the PMD does not take is freed in bulk.
    #[inline]
    pub fn flush(&mut self) -> TxResult {
        if self.len == 0 {
            return TxResult::default();
        }
        // SAFETY: ptrs[0..len] are owned mbufs; the PMD takes ownership of the first
        // `sent`, the rest stay ours and are freed once below.
        let sent = unsafe {
            ffi::rte_eth_tx_burst(
                self.port,
                self.queue,
                self.ptrs.as_mut_ptr(),
                self.len as u16,
            )
        } as usize;
        let dropped = self.len - sent;
        if dropped > 0 {
            // SAFETY: the unsent tail is still owned by us.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr().add(sent), dropped as u32) };
        }
        self.len = 0;
        TxResult {
            sent: sent as u32,
            dropped: dropped as u32,
        }
    }
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptrs[0..len] are owned and not yet transmitted.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
        }
    }
}

/// Dropped packets collected during a burst and returned to the pool in one call.
pub struct FreeBatch {
    ptrs: [*mut ffi::rte_mbuf; BURST],
    len: usize,
}

impl Default for FreeBatch {
    fn default() -> Self {
        FreeBatch {
            ptrs: [std::ptr::null_mut(); BURST],
            len: 0,
        }
    }
}

impl FreeBatch {
    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        if self.len == BURST {
            self.flush();
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
    }
    #[inline]
    pub fn flush(&mut self) {
        if self.len > 0 {
            // SAFETY: ptrs[0..len] are owned mbufs, freed exactly once.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}

impl Drop for FreeBatch {
    fn drop(&mut self) {
        self.flush();
    }
}
