//! TCP connection tracking, just enough for a NAT: which timeout applies, when a
//! connection counts as established, and a lenient sequence sanity check.

use crate::wire::tcp::{ACK, FIN, RST, SYN};

pub const NONE: u8 = 0;
/// SYN from the inside seen.
pub const SYN_SENT: u8 = 1;
/// SYN-ACK from the remote seen.
pub const SYN_RCVD: u8 = 2;
pub const ESTABLISHED: u8 = 3;
/// FIN or RST seen: transitory timeout from now on.
pub const CLOSING: u8 = 4;
/// `rfc4787` mode, a connection opened from the outside (a SYN to a mapped public
/// endpoint from a permitted remote): SYN from the remote seen, then SYN-ACK from the inside.
pub const SYN_SENT_IN: u8 = 5;
pub const SYN_RCVD_IN: u8 = 6;

/// A segment farther than this from the last sequence number seen in its direction is
/// "obviously wrong" (blind injection, garbage). Real windows are at most 2^30 (RFC 7323),
/// so a genuine segment never trips it.
pub const MAX_SEQ_DISTANCE: u32 = 1 << 30;

/// The state after a segment with `flags` in direction `from_inside`, and whether this
/// segment completed the handshake.
pub fn next(state: u8, flags: u8, from_inside: bool) -> (u8, bool) {
    if flags & (RST | FIN) != 0 {
        return (CLOSING, false);
    }
    match state {
        SYN_SENT if !from_inside && flags & (SYN | ACK) == SYN | ACK => (SYN_RCVD, false),
        SYN_RCVD if from_inside && flags & (SYN | ACK) == ACK => (ESTABLISHED, true),
        SYN_SENT_IN if from_inside && flags & (SYN | ACK) == SYN | ACK => (SYN_RCVD_IN, false),
        SYN_RCVD_IN if !from_inside && flags & (SYN | ACK) == ACK => (ESTABLISHED, true),
        s => (s, false),
    }
}

/// Whether the connection is in its long (established) timeout.
pub fn is_established(state: u8) -> bool {
    state == ESTABLISHED
}

/// Wrapping distance between two sequence numbers.
pub fn seq_distance(a: u32, b: u32) -> u32 {
    let d = a.wrapping_sub(b);
    d.min(d.wrapping_neg())
}

/// Whether `seq` is acceptable given the last one seen in that direction.
pub fn seq_ok(last: Option<u32>, seq: u32) -> bool {
    match last {
        Some(l) => seq_distance(seq, l) <= MAX_SEQ_DISTANCE,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_close() {
        let (s, e) = next(SYN_SENT, SYN, true);
        assert_eq!((s, e), (SYN_SENT, false));
        let (s, _) = next(s, SYN | ACK, false);
        assert_eq!(s, SYN_RCVD);
        let (s, e) = next(s, ACK, true);
        assert_eq!((s, e), (ESTABLISHED, true));
        assert!(is_established(s));
        assert_eq!(next(s, ACK | 0x08, false), (ESTABLISHED, false));
        assert_eq!(next(s, FIN | ACK, false).0, CLOSING);
        assert_eq!(next(SYN_SENT, RST, false).0, CLOSING);
        // An ACK from the remote alone does not establish.
        assert_eq!(next(SYN_SENT, ACK, false).0, SYN_SENT);
    }

    #[test]
    fn handshake_opened_from_outside() {
        assert_eq!(next(SYN_SENT_IN, SYN, false), (SYN_SENT_IN, false));
        assert_eq!(next(SYN_SENT_IN, ACK, true).0, SYN_SENT_IN);
        let (s, _) = next(SYN_SENT_IN, SYN | ACK, true);
        assert_eq!(s, SYN_RCVD_IN);
        assert_eq!(next(s, ACK, true), (SYN_RCVD_IN, false));
        assert_eq!(next(s, ACK, false), (ESTABLISHED, true));
        assert!(!is_established(SYN_SENT_IN) && !is_established(SYN_RCVD_IN));
    }

    #[test]
    fn sequence_leniency() {
        assert!(seq_ok(None, 12345));
        assert!(seq_ok(Some(100), 100 + (1 << 30)));
        assert!(!seq_ok(Some(100), 100 + (1 << 30) + 1));
        assert!(seq_ok(Some(5), u32::MAX - 10), "wraps");
        assert!(!seq_ok(Some(0), 0x8000_0000));
    }
}
