//! The only place raw DPDK appears. Everything above this module sees safe types:
//! `Eal`, `Mempool`, `Mbuf`, `RxBurst`, `TxBuffer`, `Port`, and plain stats structs.
//!
//! FFI is per burst (rx/tx burst, bulk free), never per packet on the forwarding path:
//! per-packet code reads and writes mbuf fields directly from Rust.

pub mod ffi {
    #![allow(
        non_upper_case_globals,
        non_camel_case_types,
        non_snake_case,
        dead_code
    )]
    #![allow(clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
}

pub mod capture;
mod eal;
pub mod hugemem;
mod mbuf;
mod mempool;
mod port;
pub mod signal;
pub mod simd;
pub mod telemetry;
pub mod thp;

pub use eal::{
    launch_on_lcore, lcore_id, main_lcore, rdtsc, tsc_hz, wait_all_lcores, Eal, LcoreHandle,
};
pub use mbuf::{FreeBatch, Mbuf, MbufAlloc, RxBurst, TxBuffer, TxResult, BURST};
pub use mempool::Mempool;
pub use port::{is_pci_address, Port, PortSetup, PortStats, RssProgram, RSS_KEY};

use std::ffi::CStr;
use std::fmt;

/// An error from a DPDK call, with the call named and `rte_strerror` text.
#[derive(Debug, Clone)]
pub struct PmdError {
    pub what: String,
    pub code: i32,
    pub text: String,
}

impl fmt::Display for PmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (errno {})", self.what, self.text, self.code)
    }
}
impl std::error::Error for PmdError {}

pub(crate) fn err(what: impl Into<String>, code: i32) -> PmdError {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ffi::rte_strerror(code)) }
        .to_string_lossy()
        .into_owned();
    PmdError {
        what: what.into(),
        code,
        text,
    }
}

/// `rte_errno` of the calling thread (through the C shim: it is a TLS macro in C).
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int; no preconditions.
    unsafe { ffi::fg_rte_errno() }
}

/// DPDK's version string, e.g. "DPDK 22.11.11".
pub fn dpdk_version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::rte_version()) }
        .to_string_lossy()
        .into_owned()
}
