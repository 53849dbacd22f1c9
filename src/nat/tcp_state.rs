//! TCP connection tracking for the NAT, after Linux `nf_conntrack_proto_tcp`
//! (`tcp_in_window`, Rozycki's "Real Stateful TCP Packet Filtering in IP Filter"):
//!
//! - Per direction (0 = from the inside, 1 = from the outside) the tracker keeps `end`
//!   (highest sequence number sent + 1, SYN and FIN counting one), `maxend` (highest
//!   sequence number the other side's window allowed), `maxwin` (largest window seen,
//!   scaled) and the window-scale shift from the SYN options (RFC 7323: used only when
//!   both SYNs carried the option).
//! - A segment is in window when (I) `seq <= sender.maxend`, (II) `end >= sender.end -
//!   receiver.maxwin`, (III) `ack <= receiver.end`, (IV) `ack >= receiver.end -
//!   max(sender.maxwin, 66000)`. Anything else is dropped and counted
//!   (`nat_tcp_out_of_window`): a blind injection must guess a window-sized slice of the
//!   sequence space.
//! - A SYN or SYN-ACK from the outside is only accepted where the handshake expects one;
//!   it can never re-initialise the tracked state of an open connection.
//! - RST: dropped unless in window; only an exact one (seq = the sender's next sequence
//!   number) closes the connection (`CLOSE`) — an in-window guess is forwarded (the
//!   endpoint answers it with a challenge ACK, RFC 5961) but changes nothing here.
//! - FIN handshake: `FIN_WAIT` (one FIN), `CLOSE_WAIT` (it was acknowledged), `LAST_ACK`
//!   (both FINs), `TIME_WAIT` (both acknowledged). Every state but `ESTABLISHED` uses the
//!   transitory timeout.
//!
//! The window state lives in a per-slot array beside the flow table (`TcpWin`, 28 bytes),
//! the state itself in the flow's `state` bits.

use crate::wire::tcp::{ACK, FIN, RST, SYN};
use crate::wire::TcpPacket;

pub const NONE: u8 = 0;
/// SYN from the inside seen.
pub const SYN_SENT: u8 = 1;
/// SYN-ACK from the remote seen.
pub const SYN_RCVD: u8 = 2;
pub const ESTABLISHED: u8 = 3;
/// A FIN seen.
pub const FIN_WAIT: u8 = 4;
/// `rfc4787` mode, a connection opened from the outside (a SYN to a mapped public
/// endpoint from a permitted remote): SYN from the remote seen, then SYN-ACK from the inside.
pub const SYN_SENT_IN: u8 = 5;
pub const SYN_RCVD_IN: u8 = 6;
/// The first FIN was acknowledged.
pub const CLOSE_WAIT: u8 = 7;
/// Both FINs seen.
pub const LAST_ACK: u8 = 8;
/// Both FINs acknowledged.
pub const TIME_WAIT: u8 = 9;
/// Reset (exact RST).
pub const CLOSE: u8 = 10;

/// Lower bound of the acknowledgement window (Linux's MAXACKWINDOW floor).
const MAX_ACK_WINDOW_MIN: u32 = 66_000;

/// `TcpWin::flags` bits.
const WSCALE_IN: u8 = 0x01;
const WSCALE_OUT: u8 = 0x02;
const FIN_IN: u8 = 0x04;
const FIN_OUT: u8 = 0x08;
const FIN_IN_ACKED: u8 = 0x10;
const FIN_OUT_ACKED: u8 = 0x20;
/// A replica picked up mid-stream after a failover (`from_scales`): the window checks are
/// advisory (segments pass and teach the bounds, as Linux's `be_liberal` pickup) until one
/// passes them with both directions known; then tracking is strict again. Why: the first
/// segments after a failover may be a zero-window probe one way (seq = snd_una - 1) and
/// an ACK beyond it the other way, which strict checks refuse forever.
const LIBERAL: u8 = 0x40;

/// Window-tracking state of one connection (index 0: the inside's direction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWin {
    end: [u32; 2],
    maxend: [u32; 2],
    /// 0: nothing seen from that direction yet.
    maxwin: [u32; 2],
    scale: [u8; 2],
    flags: u8,
}

/// The fields of a segment the tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// Payload length.
    pub len: u32,
    /// Window-scale option (SYNs only).
    pub wscale: Option<u8>,
}

impl Seg {
    /// `l4` is the TCP segment (header validated by the pipeline).
    pub fn parse(l4: &[u8]) -> Seg {
        let t = TcpPacket::new_unchecked(l4);
        let flags = t.flags();
        Seg {
            flags,
            seq: t.seq_number(),
            ack: t.ack_number(),
            win: t.window(),
            len: l4.len().saturating_sub(t.header_len()) as u32,
            wscale: if flags & SYN != 0 {
                t.window_scale_option()
            } else {
                None
            },
        }
    }
    /// Sequence number after this segment.
    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.len)
            .wrapping_add(u32::from(self.flags & SYN != 0))
            .wrapping_add(u32::from(self.flags & FIN != 0))
    }
}

/// `a` after `b` in sequence space.
#[inline]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
#[inline]
fn before(a: u32, b: u32) -> bool {
    after(b, a)
}

/// A new connection's state: everything forgotten (a SYN from the inside re-opening the
/// 5-tuple after a close, or a new flow).
pub fn reset(w: &mut TcpWin) {
    *w = TcpWin::default();
}

/// Replication: the window-scale shifts of both sides, 0x80 set where that side's SYN
/// carried the option.
pub fn scales(w: &TcpWin) -> [u8; 2] {
    let bit = |f: u8| if w.flags & f != 0 { 0x80 } else { 0 };
    [w.scale[0] | bit(WSCALE_IN), w.scale[1] | bit(WSCALE_OUT)]
}

/// Replication: a replica's tracking, nothing seen yet (the tracker picks the connection up
/// from its next segment each way) but with the negotiated window-scale shifts (max 14).
pub fn from_scales(s: [u8; 2]) -> TcpWin {
    let mut w = TcpWin {
        scale: [(s[0] & 0x0f).min(14), (s[1] & 0x0f).min(14)],
        ..TcpWin::default()
    };
    if s[0] & 0x80 != 0 {
        w.flags |= WSCALE_IN;
    }
    if s[1] & 0x80 != 0 {
        w.flags |= WSCALE_OUT;
    }
    w.flags |= LIBERAL;
    w
}

/// Why a segment is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    OutOfWindow,
}

/// Tracks `s` (from the inside when `from_inside`) on a connection in `state`: the new
/// state and whether this segment completed the handshake, or why it must be dropped.
#[inline]
pub fn track(w: &mut TcpWin, state: u8, from_inside: bool, s: &Seg) -> Result<(u8, bool), Refused> {
    if opens_fresh(w, state, from_inside, s) {
        open(w, s);
        return Ok((state, false));
    }
    track_any(w, state, from_inside, s)
}

/// The segment of every new connection: a plain SYN from the inside on a tracker that has
/// seen nothing (a new flow, or one just reset by `reopen_tcp`). For it `track_any` only
/// records the opener's side (every window check passes trivially: nothing is known of
/// the other side), which `open` does without the general path (issue 11 item 4);
/// `tests::fresh_syn_fast_path_equals_the_general_path` holds the two to the same result.
#[inline(always)]
fn opens_fresh(w: &TcpWin, state: u8, from_inside: bool, s: &Seg) -> bool {
    from_inside
        && (state == NONE || state == SYN_SENT)
        && s.flags & (SYN | ACK | RST | FIN) == SYN
        && s.len < 1 << 30
        && *w == TcpWin::default()
}

/// `track_any`'s effect for a segment `opens_fresh` accepts.
#[inline(always)]
fn open(w: &mut TcpWin, s: &Seg) {
    let end = s.end();
    w.end[0] = end;
    w.maxend[0] = end;
    w.maxwin[0] = u32::from(s.win).max(1);
    if let Some(sc) = s.wscale {
        w.scale[0] = sc;
        w.flags = WSCALE_IN;
    }
}

/// `track` without the fast path of a new connection's SYN.
fn track_any(w: &mut TcpWin, state: u8, from_inside: bool, s: &Seg) -> Result<(u8, bool), Refused> {
    let syn = s.flags & SYN != 0;
    let ack_flag = s.flags & ACK != 0;
    // Handshake segments only where the handshake expects them.
    if syn {
        let ok = match (from_inside, ack_flag) {
            (true, false) => matches!(state, NONE | SYN_SENT | ESTABLISHED),
            (false, true) => matches!(state, SYN_SENT | SYN_RCVD),
            // SYN_SENT: simultaneous open, while the outside direction is still unknown.
            (false, false) => {
                matches!(state, NONE | SYN_SENT_IN) || (state == SYN_SENT && w.maxwin[1] == 0)
            }
            (true, true) => matches!(state, SYN_SENT_IN | SYN_RCVD_IN),
        };
        if !ok {
            return Err(Refused::OutOfWindow);
        }
    }
    let (d, o) = if from_inside { (0, 1) } else { (1, 0) };
    let mut seq = s.seq;
    let mut end = s.end();
    let win = u32::from(s.win);
    let opener_retransmits =
        (state == SYN_SENT && from_inside) || (state == SYN_SENT_IN && !from_inside);
    if w.maxwin[d] == 0 || (syn && opener_retransmits && after(end, w.end[d])) {
        if syn {
            w.end[d] = end;
            w.maxend[d] = end;
            w.maxwin[d] = win.max(1);
            let bit = if from_inside { WSCALE_IN } else { WSCALE_OUT };
            match s.wscale {
                Some(sc) => {
                    w.scale[d] = sc;
                    w.flags |= bit;
                }
                None => {
                    w.scale[d] = 0;
                    w.flags &= !bit;
                }
            }
            if ack_flag && w.flags & (WSCALE_IN | WSCALE_OUT) != WSCALE_IN | WSCALE_OUT {
                // RFC 7323: scaling only when both SYNs asked for it.
                w.scale = [0, 0];
            }
        } else {
            // Picked up mid-stream: learn what this segment shows.
            w.end[d] = end;
            let swin = (win << w.scale[d]).max(1);
            w.maxwin[d] = swin;
            w.maxend[d] = end.wrapping_add(swin);
            if w.maxwin[o] == 0 {
                w.end[o] = s.ack;
                w.maxend[o] = s.ack;
            }
        }
    }
    let mut ack = s.ack;
    if !ack_flag || (s.flags & RST != 0 && ack == 0) {
        // No ACK (or a broken RST with ACK 0): nothing to check on that side.
        ack = w.end[o];
    }
    if s.flags & RST != 0 && seq == 0 && state == SYN_SENT && !from_inside {
        // RST answering the SYN.
        seq = w.end[d];
        end = seq;
    }
    let max_ack_win = w.maxwin[d].max(MAX_ACK_WINDOW_MIN);
    let in_window = !after(seq, w.maxend[d])
        && !before(end, w.end[d].wrapping_sub(w.maxwin[o]))
        && !after(ack, w.end[o])
        && !before(ack, w.end[o].wrapping_sub(max_ack_win));
    if !in_window && w.flags & LIBERAL == 0 {
        return Err(Refused::OutOfWindow);
    }
    if in_window && w.maxwin[0] != 0 && w.maxwin[1] != 0 {
        w.flags &= !LIBERAL;
    }
    if s.flags & RST != 0 {
        // Exact: the sender's next sequence number.
        let exact = seq == w.end[d];
        return Ok((if exact { CLOSE } else { state }, false));
    }
    // Update the sender's and the receiver's bounds.
    let swin = if syn { win } else { win << w.scale[d] };
    if w.maxwin[d] < swin {
        w.maxwin[d] = swin;
    }
    if w.maxwin[o] != 0 && after(end, w.maxend[d]) {
        w.maxwin[o] = w.maxwin[o].wrapping_add(end.wrapping_sub(w.maxend[d]));
    }
    if after(end, w.end[d]) {
        w.end[d] = end;
    }
    if ack_flag {
        let top = ack.wrapping_add(swin);
        if after(top, w.maxend[o].wrapping_sub(1)) {
            w.maxend[o] = if swin == 0 { top.wrapping_add(1) } else { top };
        }
    }
    if s.flags & FIN != 0 {
        w.flags |= if from_inside { FIN_IN } else { FIN_OUT };
    }
    if ack_flag {
        // This segment acknowledges the other side's FIN once it acks all it sent.
        let (fin, acked) = if from_inside {
            (FIN_OUT, FIN_OUT_ACKED)
        } else {
            (FIN_IN, FIN_IN_ACKED)
        };
        if w.flags & fin != 0 && !before(ack, w.end[o]) {
            w.flags |= acked;
        }
    }
    Ok(next_state(w, state, from_inside, s.flags))
}

/// The state after an accepted, non-RST segment.
fn next_state(w: &TcpWin, state: u8, from_inside: bool, flags: u8) -> (u8, bool) {
    let hs = flags & (SYN | ACK);
    let st = match state {
        SYN_SENT if !from_inside && hs == SYN | ACK => return (SYN_RCVD, false),
        // Simultaneous open: both SYNs seen, the inside's SYN-ACK comes next.
        SYN_SENT if !from_inside && hs == SYN => return (SYN_SENT_IN, false),
        SYN_RCVD if from_inside && hs == ACK => return (ESTABLISHED, true),
        SYN_SENT_IN if from_inside && hs == SYN | ACK => return (SYN_RCVD_IN, false),
        SYN_RCVD_IN if !from_inside && hs == ACK => return (ESTABLISHED, true),
        s => s,
    };
    if w.flags & (FIN_IN | FIN_OUT) == 0 {
        return (st, false);
    }
    let both = FIN_IN | FIN_OUT;
    let both_acked = FIN_IN_ACKED | FIN_OUT_ACKED;
    let f = w.flags;
    let s = if f & both == both && f & both_acked == both_acked {
        TIME_WAIT
    } else if f & both == both {
        LAST_ACK
    } else if f & (FIN_IN_ACKED | FIN_OUT_ACKED) != 0 {
        CLOSE_WAIT
    } else {
        FIN_WAIT
    };
    (s, false)
}

/// Whether the connection is in its long (established) timeout.
pub fn is_established(state: u8) -> bool {
    state == ESTABLISHED
}

/// A FIN was seen (the connection is closing or closed by the FIN handshake, so a peer
/// may be in TIME_WAIT), as opposed to open, reset or never established.
pub fn closed_by_fin(state: u8) -> bool {
    matches!(state, FIN_WAIT | CLOSE_WAIT | LAST_ACK | TIME_WAIT)
}

/// The connection is over or closing: a new SYN from the inside on its 5-tuple opens a
/// new connection on the mapping.
pub fn reopenable(state: u8) -> bool {
    matches!(state, FIN_WAIT | CLOSE_WAIT | LAST_ACK | TIME_WAIT | CLOSE)
}

#[cfg(test)]
mod tests;
