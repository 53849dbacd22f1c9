//! The gateway's tenant limits (`crate::limits`) on the NAT path: every packet of the
//! gateway is charged once it is classified to the gateway (after the handoff decision, so
//! the worker that translates it is the one that charges it), before any table work; a new
//! mapping is charged before its port is searched.

use super::NatWorker;
use crate::pipeline::counters::DropReason;

impl NatWorker {
    /// One packet of gateway `gi`, at the TSC of the packet being processed.
    #[inline]
    pub(super) fn limit_packet(&mut self, gi: usize) -> Result<(), DropReason> {
        let now = self.now;
        match self.gws.get_mut(gi) {
            Some(g) => g.limiter.packet(now).map_err(|r| r.nat()),
            None => Ok(()),
        }
    }

    /// A new mapping of gateway `gi`: its concurrent-flow share on this worker, then its new
    /// flows/s share.
    #[inline]
    pub(super) fn limit_new_flow(&mut self, gi: usize) -> Result<(), DropReason> {
        let now = self.now;
        let live = self.counters.get(gi).map_or(0, |c| c.active_connections);
        match self.gws.get_mut(gi) {
            Some(g) => g.limiter.new_flow(live, now).map_err(|r| r.nat()),
            None => Ok(()),
        }
    }
}
