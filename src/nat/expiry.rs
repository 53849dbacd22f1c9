//! A hashed timer wheel with lazy re-arming, for flow expiry without table scans.
//!
//! Why lazy: a flow's deadline moves on every packet, and unlinking/relinking it in a list
//! per packet would cost two random memory writes. Instead the packet path only stores the
//! new deadline in the flow; the flow stays in the slot of the deadline it had when it was
//! armed. When the wheel reaches that slot the flow is either really due (removed) or is
//! re-armed for its current deadline. Each live flow sits in exactly one singly linked slot
//! list, threaded through `next` (one `u32` per flow, shared with the flow table's free
//! list: a slot is either free or armed, never both).
//!
//! Clock: the wheel's cursor is a `u64` tick (raw TSC / tick length, so after years of
//! uptime it is large); it starts at the current tick (synchronised on the first `pop_due`
//! while the wheel is empty, not at 0) and, if it ever lags a whole turn behind (a stall),
//! jumps forward by whole turns, which keeps every slot's entries reachable within one
//! turn. Flow deadlines are stored as `u32` ticks (compact) and compared with wrapping
//! arithmetic (`is_due`), which is exact while a deadline is within 2^31 ticks (~4 years)
//! of now — timeouts are capped far below that. Deadlines beyond the wheel's span are armed
//! at the far end and re-armed when reached.

pub const NIL: u32 = u32::MAX;

/// True if `deadline` is at or before `now` (wrapping tick arithmetic).
#[inline]
pub fn is_due(deadline: u32, now: u32) -> bool {
    (now.wrapping_sub(deadline) as i32) >= 0
}

pub struct TimerWheel {
    heads: Vec<u32>,
    mask: u32,
    /// The next tick to process; every slot before it has been emptied.
    cursor: u64,
    /// Armed entries (lets an empty wheel jump to the current tick).
    armed: u32,
}

impl TimerWheel {
    /// `slots` is rounded up to a power of two; `now` is the current tick.
    pub fn new(slots: usize, now: u64) -> TimerWheel {
        let n = slots.max(2).next_power_of_two();
        TimerWheel {
            heads: vec![NIL; n],
            mask: (n - 1) as u32,
            cursor: now,
            armed: 0,
        }
    }

    /// Ticks covered by the wheel.
    pub fn span(&self) -> u32 {
        self.mask + 1
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Arm `idx` to be looked at no later than `deadline`.
    #[inline]
    pub fn arm(&mut self, next: &mut [u32], idx: u32, deadline: u32) {
        let delta =
            (deadline.wrapping_sub(self.cursor as u32) as i32).clamp(0, self.mask as i32) as u64;
        let slot = (self.cursor.wrapping_add(delta) & u64::from(self.mask)) as usize;
        let (Some(head), Some(link)) = (self.heads.get_mut(slot), next.get_mut(idx as usize))
        else {
            return;
        };
        *link = *head;
        *head = idx;
        self.armed += 1;
    }

    /// The next armed entry whose slot is at or before `now`, unlinked; `None` when there
    /// is none or when `slot_budget` empty slots have been stepped over (bounded work).
    #[inline]
    pub fn pop_due(&mut self, next: &[u32], now: u64, slot_budget: &mut u32) -> Option<u32> {
        if self.armed == 0 && self.cursor < now {
            // Nothing armed: nothing to catch up on.
            self.cursor = now;
        }
        let span = u64::from(self.mask) + 1;
        let lag = now.saturating_sub(self.cursor);
        if lag >= 2 * span {
            // Turns behind (a stall): skipping whole turns keeps the cursor's slot, and a
            // lag of one to two turns still walks every slot before passing `now`.
            self.cursor += (lag / span - 1) * span;
        }
        loop {
            if self.cursor > now {
                return None;
            }
            let slot = (self.cursor & u64::from(self.mask)) as usize;
            let head = self.heads.get_mut(slot)?;
            if *head != NIL {
                let idx = *head;
                *head = next.get(idx as usize).copied().unwrap_or(NIL);
                self.armed = self.armed.saturating_sub(1);
                return Some(idx);
            }
            if *slot_budget == 0 {
                return None;
            }
            *slot_budget -= 1;
            self.cursor += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_in_slot_order_and_work_is_bounded() {
        let mut next = vec![NIL; 8];
        let mut w = TimerWheel::new(16, 100);
        w.arm(&mut next, 0, 105);
        w.arm(&mut next, 1, 103);
        w.arm(&mut next, 2, 1000); // beyond the span: armed at the far end
        w.arm(&mut next, 3, 50); // already due
        let mut budget = 100;
        assert_eq!(w.pop_due(&next, 102, &mut budget), Some(3));
        assert_eq!(w.pop_due(&next, 102, &mut budget), None);
        assert_eq!(w.pop_due(&next, 102, &mut budget), None);
        assert_eq!(w.cursor(), 103);
        let mut budget = 1;
        assert_eq!(w.pop_due(&next, 200, &mut budget), Some(1));
        assert_eq!(
            w.pop_due(&next, 200, &mut budget),
            None,
            "budget of one empty slot"
        );
        let mut budget = 100;
        assert_eq!(w.pop_due(&next, 200, &mut budget), Some(0));
        assert_eq!(
            w.pop_due(&next, 200, &mut budget),
            Some(2),
            "far entry surfaces at span end"
        );
        assert!(is_due(5, 5) && is_due(4, 5) && !is_due(6, 5));
        assert!(is_due(u32::MAX, 2), "wrapping");
    }
}
