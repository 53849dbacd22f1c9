//! A global allocator that asks for transparent huge pages on large allocations.
//!
//! The NAT flow tables are hundreds of MiB of randomly accessed memory; on 4 KiB pages
//! (and in a VM, with two-dimensional page walks) TLB misses dominate a lookup. With
//! THP in `madvise` mode (Debian's default) memory is only backed by 2 MiB pages where
//! the program asks, so every allocation of `THRESHOLD` or more gets `MADV_HUGEPAGE`
//! before it is first touched. This runs when tables are created (start-up), never on
//! the packet path.
use std::alloc::{GlobalAlloc, Layout, System};

pub struct ThpAlloc;

const THRESHOLD: usize = 4 << 20;
const HUGE: usize = 2 << 20;

fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < THRESHOLD {
        return;
    }
    let start = (p as usize + HUGE - 1) & !(HUGE - 1);
    let end = (p as usize + size) & !(HUGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside the allocation just made; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents. Failure is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call is forwarded to the system allocator with the same arguments; the
// advice does not change what the memory holds.
unsafe impl GlobalAlloc for ThpAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(l) };
        advise(p, l.size());
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(l) };
        advise(p, l.size());
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let q = unsafe { System.realloc(p, l, new) };
        advise(q, new);
        q
    }
}
