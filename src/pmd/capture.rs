//! Packet capture with DPDK's own tools (`dpdk-dumpcap`, `dpdk-pdump`): the primary process
//! registers the pdump server (`rte_pdump_init`). A capture tool then starts as a secondary
//! process on the same `--file-prefix`, asks over the multi-process socket to enable capture
//! on a port/queue, and the primary installs rx/tx callbacks that copy matching packets into
//! a ring of the tool's mempool. Until a capture is requested nothing runs per packet.
//!
//! Secondaries map the primary's memory from its hugepage files, so capture needs a
//! hugepage-backed primary (not `--no-huge`, `--in-memory` or `--no-shconf`).
use super::{err, ffi, rte_errno, PmdError};

/// EAL arguments with which no secondary process can attach.
pub fn blocking_args(args: &[String]) -> Vec<&str> {
    args.iter()
        .map(|a| a.as_str())
        .filter(|a| matches!(*a, "--in-memory" | "--no-shconf" | "--no-huge"))
        .collect()
}

/// The pdump server of this process; dropping it unregisters the server.
pub struct CaptureServer {
    _private: (),
}

impl CaptureServer {
    /// Starts the server when `enabled` (config `eal.capture`, default on) and the EAL
    /// arguments let secondaries attach; says in the log which it is.
    pub fn start(enabled: bool, eal_args: &[String]) -> Option<CaptureServer> {
        if !enabled {
            crate::info!("packet capture (rte_pdump): off (eal.capture: false)");
            return None;
        }
        let blocking = blocking_args(eal_args);
        if !blocking.is_empty() {
            crate::info!(
                "packet capture (rte_pdump): unavailable: secondary processes cannot attach with {}",
                blocking.join(" ")
            );
            return None;
        }
        match init() {
            Ok(()) => {
                crate::info!("packet capture (rte_pdump): ready for dpdk-dumpcap / dpdk-pdump");
                Some(CaptureServer { _private: () })
            }
            Err(e) => {
                crate::warn!("packet capture (rte_pdump): {e}");
                None
            }
        }
    }
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        uninit();
    }
}

/// Registers the pdump server in the primary. Call once, after `Eal::init`.
pub fn init() -> Result<(), PmdError> {
    // SAFETY: the EAL is initialised (the caller holds an `Eal`); called once from the
    // control thread before any capture tool can connect.
    let rc = unsafe { ffi::rte_pdump_init() };
    if rc < 0 {
        return Err(err("rte_pdump_init", rte_errno()));
    }
    Ok(())
}

/// Unregisters it (before ports stop, so no capture callback outlives its port).
pub fn uninit() {
    // SAFETY: called once from the control thread after `init` succeeded.
    unsafe {
        ffi::rte_pdump_uninit();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn args_that_keep_secondaries_out() {
        let a: Vec<String> = ["--file-prefix", "x", "--no-huge", "-m", "512"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(super::blocking_args(&a), vec!["--no-huge"]);
        assert!(super::blocking_args(&a[..2]).is_empty());
    }
}
