//! Fixed-size arrays on huge pages, and a cache prefetch, for the flow tables.
//!
//! A million-flow table is tens of MiB read at random: on 4 KiB pages (two-dimensional
//! page walks in a VM) nearly every lookup also misses the TLB. `HugeArray` therefore
//! asks for explicit 2 MiB pages (`MAP_HUGETLB`, from the same pool DPDK uses) when the
//! array is big enough for the rounding to be cheap, and falls back to ordinary pages
//! advised `MADV_HUGEPAGE` (transparent huge pages) when the pool is empty. Arrays are
//! created and filled at start-up (every page touched then, not on the packet path) and
//! never resized.
use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const HUGE: usize = 2 << 20;
/// Smaller arrays stay on ordinary (THP-advised) pages: one or two huge pages would sit
/// mostly in a tail of small pages anyway.
const HUGETLB_MIN: usize = 4 << 20;

/// Bytes currently mapped by all `HugeArray`s (for memory accounting: the benchmark's
/// counting allocator does not see `mmap`).
static MAPPED: AtomicUsize = AtomicUsize::new(0);
static MAPPED_HUGETLB: AtomicUsize = AtomicUsize::new(0);

/// Bytes mapped by live `HugeArray`s: (all, of which on explicit huge pages).
pub fn mapped_bytes() -> (usize, usize) {
    (MAPPED.load(Relaxed), MAPPED_HUGETLB.load(Relaxed))
}

/// `len` elements of a plain `Copy` type in their own mapping.
pub struct HugeArray<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// Start and length of the whole mapping (page aligned).
    map: NonNull<u8>,
    map_len: usize,
    /// Leading bytes on explicit huge pages.
    hugetlb: usize,
}

// SAFETY: a HugeArray owns its mapping exclusively (like a Box<[T]>), so it can move to
// and be shared between threads whenever T can.
unsafe impl<T: Copy + Send> Send for HugeArray<T> {}
// SAFETY: as above; shared access only hands out &[T].
unsafe impl<T: Copy + Sync> Sync for HugeArray<T> {}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to).saturating_mul(to)
}

/// Maps `bytes` of zeroed memory, 2 MiB aligned when 2 MiB or more: (start, mapping
/// length, leading bytes on explicit huge pages).
///
/// An address range is reserved first (`PROT_NONE`). With enough huge pages in the pool
/// its whole 2 MiB multiples are replaced by a `MAP_HUGETLB` mapping and only the
/// remainder (< 2 MiB) stays ordinary pages: no 2 MiB rounding waste. Otherwise the whole
/// range is ordinary pages advised `MADV_HUGEPAGE` (transparent huge pages).
fn map(bytes: usize, try_hugetlb: bool) -> Option<(NonNull<u8>, usize, usize)> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let len = round_up(bytes, 4096);
    let extra = if len >= HUGE { HUGE } else { 0 };
    // SAFETY: a fresh anonymous inaccessible mapping, no address hint; result checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len + extra,
            libc::PROT_NONE,
            anon,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = p as usize;
    let start = if extra > 0 {
        round_up(base, HUGE)
    } else {
        base
    };
    let (head, tail) = (start - base, base + extra - start);
    let huge = if try_hugetlb && bytes >= HUGETLB_MIN {
        len / HUGE * HUGE
    } else {
        0
    };
    // SAFETY: every range below lies inside the reservation just made, which nothing else
    // refers to: trimming its unaligned head and tail, replacing its start by huge pages
    // (MAP_FIXED over our own reservation only; without MAP_NORESERVE the pages are
    // reserved now or the call fails now, so touching them later cannot SIGBUS), making
    // the rest accessible, and advice that only changes how the kernel backs it.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        let at = start as *mut libc::c_void;
        let got = huge > 0
            && libc::mmap(
                at,
                huge,
                rw,
                anon | libc::MAP_FIXED | libc::MAP_HUGETLB,
                -1,
                0,
            ) == at;
        let done = if got { huge } else { 0 };
        if len > done && libc::mprotect((start + done) as *mut libc::c_void, len - done, rw) != 0 {
            // A failed MAP_FIXED may have taken the reservation with it: start over on
            // ordinary pages.
            libc::munmap(at, len);
            return if huge > 0 { map(bytes, false) } else { None };
        }
        if done == 0 && extra > 0 {
            libc::madvise(at, len, libc::MADV_HUGEPAGE);
        }
        NonNull::new(start as *mut u8).map(|p| (p, len, done))
    }
}

impl<T: Copy> HugeArray<T> {
    /// `len` elements, element `i` being `f(i)`. Aborts like `Vec` when out of memory.
    pub fn from_fn(len: usize, mut f: impl FnMut(usize) -> T) -> HugeArray<T> {
        let layout = Layout::array::<T>(len.max(1)).unwrap_or(Layout::new::<T>());
        // Mappings are page aligned; nothing here needs more.
        debug_assert!(std::mem::align_of::<T>() <= 4096);
        let Some((map, map_len, hugetlb)) = map(layout.size().max(1), true) else {
            std::alloc::handle_alloc_error(layout);
        };
        let ptr = map.cast::<T>();
        for i in 0..len {
            // SAFETY: i < len and the mapping holds at least len * size_of::<T>() bytes,
            // suitably aligned (page aligned start, T's alignment ≤ a page).
            unsafe { ptr.as_ptr().add(i).write(f(i)) };
        }
        MAPPED.fetch_add(map_len, Relaxed);
        MAPPED_HUGETLB.fetch_add(hugetlb, Relaxed);
        HugeArray {
            ptr,
            len,
            map,
            map_len,
            hugetlb,
        }
    }

    /// `len` copies of `v`.
    pub fn filled(len: usize, v: T) -> HugeArray<T> {
        Self::from_fn(len, |_| v)
    }

    /// Bytes mapped (rounded up to whole pages).
    pub fn bytes(&self) -> usize {
        self.map_len
    }

    /// On explicit (`MAP_HUGETLB`) huge pages (all but a tail of less than 2 MiB).
    pub fn is_hugetlb(&self) -> bool {
        self.hugetlb > 0
    }
}

impl<T: Copy> Deref for HugeArray<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: ptr points to len initialised elements owned by self (from_fn).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeArray<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref; &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeArray<T> {
    fn drop(&mut self) {
        // SAFETY: [map, map + map_len) is what `map` mapped (one or two adjacent
        // mappings, the huge one ending on a 2 MiB boundary), no longer referenced (T is
        // Copy: nothing to drop).
        unsafe {
            libc::munmap(self.map.as_ptr().cast::<libc::c_void>(), self.map_len);
        }
        MAPPED.fetch_sub(self.map_len, Relaxed);
        MAPPED_HUGETLB.fetch_sub(self.hugetlb, Relaxed);
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for HugeArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeArray")
            .field("len", &self.len)
            .field("bytes", &self.map_len)
            .field("hugetlb", &self.hugetlb)
            .finish()
    }
}

/// Starts loading the cache line holding `*p` (no fault, no effect on program state).
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and changes no architectural state;
    // `p` is a valid reference anyway. SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_arrays_hold_their_values_and_are_accounted() {
        let (before, _) = mapped_bytes();
        let small = HugeArray::from_fn(1000, |i| i as u32);
        assert_eq!(small.len(), 1000);
        assert!(small.iter().enumerate().all(|(i, &v)| v == i as u32));
        assert_eq!(small.bytes(), 4096);
        // 6 MiB + 5 KiB: MAP_HUGETLB for 6 MiB (when the pool has pages) and a small-page
        // tail, or THP; either way no rounding beyond 4 KiB pages.
        let n = (6 << 20) + 5000;
        let mut big = HugeArray::filled(n, 7u8);
        big[12345] = 9;
        big[n - 1] = 8;
        assert_eq!(
            big.iter().map(|&b| u64::from(b)).sum::<u64>(),
            7 * n as u64 + 3
        );
        assert_eq!(big.as_ptr() as usize % HUGE, 0, "2 MiB aligned");
        assert_eq!(big.bytes(), (6 << 20) + 8192);
        assert!(mapped_bytes().0 >= before + small.bytes() + big.bytes());
        println!("6 MiB array on MAP_HUGETLB pages: {}", big.is_hugetlb());
        let (total, huge) = (small.bytes() + big.bytes(), big.is_hugetlb());
        drop((small, big));
        // Other tests may map concurrently; only check ours went away when alone.
        let _ = (total, huge);
        prefetch(&0u64);
    }
}
