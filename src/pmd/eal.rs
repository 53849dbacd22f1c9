//! EAL initialisation, lcores and the TSC clock.
use super::{err, ffi, rte_errno, PmdError};
use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};

/// Proof that `rte_eal_init` succeeded. Dropping it runs `rte_eal_cleanup`.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise the EAL with `args` (argv[0] is supplied here).
    pub fn init(args: &[String]) -> Result<Eal, PmdError> {
        let mut owned: Vec<CString> = vec![CString::new("flowgate").unwrap()];
        for a in args {
            owned.push(
                CString::new(a.as_str()).map_err(|_| err(format!("EAL argument {a:?}"), 22))?,
            );
        }
        // rte_eal_init may permute argv; it keeps pointers for the life of the process,
        // so the strings are leaked on purpose (once per process).
        let mut argv: Vec<*mut c_char> = owned.into_iter().map(|s| s.into_raw()).collect();
        let argc = argv.len() as c_int;
        let argv_ptr = argv.as_mut_ptr();
        std::mem::forget(argv);
        // SAFETY: argc/argv describe valid NUL-terminated strings that live forever.
        let rc = unsafe { ffi::rte_eal_init(argc, argv_ptr) };
        if rc < 0 {
            return Err(err("rte_eal_init", rte_errno()));
        }
        Ok(Eal { _private: () })
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after every worker lcore has returned.
        unsafe {
            ffi::rte_eal_cleanup();
        }
    }
}

/// The EAL lcore id of the calling thread (u32::MAX on non-EAL threads).
#[inline]
pub fn lcore_id() -> u32 {
    // SAFETY: reads per-thread EAL state; valid on any thread.
    unsafe { ffi::rte_lcore_id() }
}

pub fn main_lcore() -> u32 {
    // SAFETY: valid after rte_eal_init.
    unsafe { ffi::rte_get_main_lcore() }
}

/// The time-stamp counter, the data plane's clock.
///
/// On x86_64 the RDTSC instruction inline, as DPDK's `rte_rdtsc` is: through the bindgen
/// wrapper every read was a call into C, and the worker reads the clock several times per
/// loop (`rte_rdtsc__extern` was 1-8 % of the worker's samples on the memif link, issue 11).
#[inline]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads the TSC; no preconditions (the same instruction rte_rdtsc runs).
        unsafe { std::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: reads the TSC; no preconditions.
        unsafe { ffi::rte_rdtsc() }
    }
}

pub fn tsc_hz() -> u64 {
    // SAFETY: valid after rte_eal_init.
    unsafe { ffi::rte_get_tsc_hz() }
}

/// A function launched on a worker lcore.
pub struct LcoreHandle {
    pub lcore: u32,
}

type BoxedJob = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<BoxedJob> leaked by launch_on_lcore, taken back exactly once.
    let job: Box<BoxedJob> = unsafe { Box::from_raw(arg as *mut BoxedJob) };
    job()
}

/// Run `job` on EAL worker lcore `lcore` (rte_eal_remote_launch).
pub fn launch_on_lcore<F>(lcore: u32, job: F) -> Result<LcoreHandle, PmdError>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let boxed: Box<BoxedJob> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: the trampoline takes ownership of `arg`; on failure we take it back below.
    let rc = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc != 0 {
        // SAFETY: the launch failed, so the trampoline never ran and `arg` is still ours.
        drop(unsafe { Box::from_raw(arg as *mut BoxedJob) });
        return Err(err(format!("rte_eal_remote_launch on lcore {lcore}"), rc));
    }
    Ok(LcoreHandle { lcore })
}

/// Wait for every worker lcore to return.
pub fn wait_all_lcores() {
    // SAFETY: valid after rte_eal_init, from the main lcore.
    unsafe { ffi::rte_eal_mp_wait_lcore() }
}
