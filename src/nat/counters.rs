//! Per-gateway counters mirroring CloudWatch `AWS/NATGateway`, owned by one worker.
//! The control thread sums them over workers (like `pipeline::counters`).

use crate::pipeline::counters::DropReason;

// Written per packet by its worker, but allocated by the control thread (in `NatWorker::new`)
// right after the previous worker's: whole cache-line pairs of its own, so no line is
// written by two workers (docs/benchmarks.md, cache-line audit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(align(128))]
pub struct GatewayCounters {
    /// Gauge: live flows of this gateway on this worker.
    pub active_connections: u64,
    /// New mappings attempted (a flow was created or creation was refused for lack of ports
    /// or table space).
    pub connection_attempts: u64,
    /// TCP handshakes completed; UDP/ICMP flows that saw a reply.
    pub connections_established: u64,
    pub port_allocation_errors: u64,
    /// Flows removed after their idle timeout.
    pub idle_timeouts: u64,
    pub packets_in_from_source: u64,
    pub bytes_in_from_source: u64,
    pub packets_out_to_destination: u64,
    pub bytes_out_to_destination: u64,
    pub packets_in_from_destination: u64,
    pub bytes_in_from_destination: u64,
    pub packets_out_to_source: u64,
    pub bytes_out_to_source: u64,
    /// Drops of this gateway's traffic, indexed by `DropReason as usize` (plus the RSTs
    /// sent, under `NatIdleTimeoutRst`).
    pub drops: [u64; DropReason::COUNT],
}

impl Default for GatewayCounters {
    fn default() -> Self {
        GatewayCounters {
            active_connections: 0,
            connection_attempts: 0,
            connections_established: 0,
            port_allocation_errors: 0,
            idle_timeouts: 0,
            packets_in_from_source: 0,
            bytes_in_from_source: 0,
            packets_out_to_destination: 0,
            bytes_out_to_destination: 0,
            packets_in_from_destination: 0,
            bytes_in_from_destination: 0,
            packets_out_to_source: 0,
            bytes_out_to_source: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl GatewayCounters {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        if let Some(c) = self.drops.get_mut(r as usize) {
            *c += 1;
        }
    }
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops.get(r as usize).copied().unwrap_or(0)
    }
}
