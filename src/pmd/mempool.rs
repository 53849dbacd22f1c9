//! Packet mempools.
use super::{err, ffi, rte_errno, PmdError};
use std::ffi::CString;
use std::ptr::NonNull;

/// A DPDK pktmbuf pool. DPDK mempools are thread-safe (per-lcore caches in front of a
/// lock-free ring), so the handle is shared by every worker.
#[derive(Clone, Copy)]
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
}

// SAFETY: rte_mempool operations are multi-producer/multi-consumer safe.
unsafe impl Send for Mempool {}
// SAFETY: as above; the handle itself is immutable.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` mbufs with `data_room` bytes after the headroom each.
    pub fn create(name: &str, n: u32, cache: u32, data_room: u32) -> Result<Mempool, PmdError> {
        let cname = CString::new(name).unwrap();
        let room = data_room + ffi::RTE_PKTMBUF_HEADROOM;
        if room > u16::MAX as u32 {
            return Err(err(format!("mempool {name}: data room {room} > 65535"), 22));
        }
        // SAFETY: cname is a valid C string; socket -1 = any.
        let p =
            unsafe { ffi::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, room as u16, -1) };
        NonNull::new(p).map(|ptr| Mempool { ptr }).ok_or_else(|| {
            err(
                format!("rte_pktmbuf_pool_create({name}, {n} mbufs)"),
                rte_errno(),
            )
        })
    }

    pub fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }

    /// mbufs currently allocated (in rings, in flight, in caches' complement).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool outlives the process's data plane; read-only query.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    pub fn available(&self) -> u32 {
        // SAFETY: as above.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }
}
