//! One test per tracking rule (see the module doc).

use super::*;

fn seg(flags: u8, seq: u32, ack: u32, len: u32, win: u16) -> Seg {
    Seg {
        flags,
        seq,
        ack,
        win,
        len,
        wscale: None,
    }
}

/// Inside ISN `C`, remote ISN `S`; windows 64 KiB; returns the established tracker.
const C: u32 = 1_000_000;
const S: u32 = 9_000_000;

fn established() -> (TcpWin, u8) {
    let mut w = TcpWin::default();
    let (st, _) = track(&mut w, SYN_SENT, true, &seg(SYN, C, 0, 0, 65535)).unwrap();
    assert_eq!(st, SYN_SENT);
    let (st, _) = track(&mut w, st, false, &seg(SYN | ACK, S, C + 1, 0, 65535)).unwrap();
    assert_eq!(st, SYN_RCVD);
    let (st, est) = track(&mut w, st, true, &seg(ACK, C + 1, S + 1, 0, 65535)).unwrap();
    assert_eq!((st, est), (ESTABLISHED, true));
    (w, st)
}

#[test]
fn handshake_data_and_fin_handshake_states() {
    let (mut w, st) = established();
    // Data both ways, 1000 bytes at a time.
    let st = track(&mut w, st, true, &seg(ACK, C + 1, S + 1, 1000, 65535))
        .unwrap()
        .0;
    let st = track(&mut w, st, false, &seg(ACK, S + 1, C + 1001, 1000, 65535))
        .unwrap()
        .0;
    assert_eq!(st, ESTABLISHED);
    // Inside closes first.
    let st = track(
        &mut w,
        st,
        true,
        &seg(ACK | FIN, C + 1001, S + 1001, 0, 65535),
    )
    .unwrap()
    .0;
    assert_eq!(st, FIN_WAIT);
    assert!(closed_by_fin(st) && reopenable(st) && !is_established(st));
    let st = track(&mut w, st, false, &seg(ACK, S + 1001, C + 1002, 0, 65535))
        .unwrap()
        .0;
    assert_eq!(st, CLOSE_WAIT, "FIN acknowledged");
    // The remote still sends (half close), then closes.
    let st = track(&mut w, st, false, &seg(ACK, S + 1001, C + 1002, 500, 65535))
        .unwrap()
        .0;
    assert_eq!(st, CLOSE_WAIT);
    let st = track(
        &mut w,
        st,
        false,
        &seg(ACK | FIN, S + 1501, C + 1002, 0, 65535),
    )
    .unwrap()
    .0;
    assert_eq!(st, LAST_ACK);
    let st = track(&mut w, st, true, &seg(ACK, C + 1002, S + 1502, 0, 65535))
        .unwrap()
        .0;
    assert_eq!(st, TIME_WAIT);
    assert!(closed_by_fin(st));
}

#[test]
fn spoofed_syn_and_syn_ack_from_outside_cannot_overwrite_an_open_connection() {
    let (mut w, st) = established();
    let before = w;
    for flags in [SYN, SYN | ACK] {
        // Even one that would be "in window".
        for s in [S + 1, 12345] {
            assert_eq!(
                track(&mut w, st, false, &seg(flags, s, C + 1, 0, 65535)),
                Err(Refused::OutOfWindow)
            );
        }
    }
    assert_eq!(w, before, "tracked state untouched");
    // The real peer's next segment still passes.
    assert!(track(&mut w, st, false, &seg(ACK, S + 1, C + 1, 100, 65535)).is_ok());
}

#[test]
fn syn_ack_must_acknowledge_the_syn() {
    let mut w = TcpWin::default();
    track(&mut w, SYN_SENT, true, &seg(SYN, C, 0, 0, 65535)).unwrap();
    // Acknowledges data never sent: refused, state unchanged.
    assert!(track(
        &mut w,
        SYN_SENT,
        false,
        &seg(SYN | ACK, S, C + 5000, 0, 65535)
    )
    .is_err());
    let (st, _) = track(&mut w, SYN_SENT, false, &seg(SYN | ACK, S, C + 1, 0, 65535)).unwrap();
    assert_eq!(st, SYN_RCVD);
}

#[test]
fn segments_outside_the_window_are_refused() {
    let (mut w, st) = established();
    // Beyond what the receiver's window allows (seq > maxend).
    assert!(track(
        &mut w,
        st,
        false,
        &seg(ACK, S + 1 + 70_000, C + 1, 10, 65535)
    )
    .is_err());
    // Far behind (end < end - maxwin).
    assert!(track(&mut w, st, false, &seg(ACK, S - 200_000, C + 1, 10, 65535)).is_err());
    // Acknowledging data the other side never sent (ack > receiver end).
    assert!(track(&mut w, st, false, &seg(ACK, S + 1, C + 10, 0, 65535)).is_err());
    // Acknowledging far behind (ack < end - max(maxwin, 66000)).
    assert!(track(&mut w, st, false, &seg(ACK, S + 1, C - 100_000, 0, 65535)).is_err());
    // The old ±2^30 leniency is gone.
    assert!(track(&mut w, st, true, &seg(ACK, C + (1 << 29), S + 1, 10, 65535)).is_err());
    // Just inside: the last byte the window allows; a retransmission.
    assert!(track(
        &mut w,
        st,
        false,
        &seg(ACK, S + 1 + 65535 - 10, C + 1, 10, 65535)
    )
    .is_ok());
    assert!(track(&mut w, st, false, &seg(ACK, S + 1, C + 1, 10, 65535)).is_ok());
}

#[test]
fn rst_only_in_window_and_only_an_exact_one_closes() {
    let (mut w, st) = established();
    // Blind RST: out of window, dropped.
    assert!(track(&mut w, st, false, &seg(RST, S + 1_000_000, 0, 0, 0)).is_err());
    assert!(track(
        &mut w,
        st,
        false,
        &seg(RST | ACK, S - 1_000_000, C + 1, 0, 0)
    )
    .is_err());
    // In window but not exact: forwarded (the endpoint sends a challenge ACK), no change.
    assert_eq!(
        track(&mut w, st, false, &seg(RST, S + 1000, 0, 0, 0)),
        Ok((ESTABLISHED, false))
    );
    // Exact: closes.
    assert_eq!(
        track(&mut w, st, false, &seg(RST | ACK, S + 1, C + 1, 0, 0)),
        Ok((CLOSE, false))
    );
    assert!(!closed_by_fin(CLOSE) && reopenable(CLOSE));
}

#[test]
fn window_scaling_only_when_both_syns_carry_it() {
    let big = |both: bool| {
        let mut w = TcpWin::default();
        let mut syn = seg(SYN, C, 0, 0, 65535);
        syn.wscale = Some(7);
        track(&mut w, SYN_SENT, true, &syn).unwrap();
        let mut sa = seg(SYN | ACK, S, C + 1, 0, 65535);
        sa.wscale = both.then_some(7);
        track(&mut w, SYN_SENT, false, &sa).unwrap();
        // Inside advertises 1000 << 7 = 128 000 bytes.
        track(&mut w, SYN_RCVD, true, &seg(ACK, C + 1, S + 1, 0, 1000)).unwrap();
        // The remote sends 100 000 bytes ahead of the acknowledged point.
        track(
            &mut w,
            ESTABLISHED,
            false,
            &seg(ACK, S + 1 + 100_000, C + 1, 1000, 1000),
        )
    };
    assert!(big(true).is_ok(), "scaled window");
    assert!(big(false).is_err(), "no scaling: 1000-byte window");
}

#[test]
fn picked_up_mid_stream_and_sequence_wrap() {
    let mut w = TcpWin::default();
    let near = u32::MAX - 500;
    // No SYN seen (e.g. a flow found after a restart): learns from the segments.
    let st = track(&mut w, ESTABLISHED, true, &seg(ACK, near, 77, 1000, 65535))
        .unwrap()
        .0;
    let st = track(
        &mut w,
        st,
        false,
        &seg(ACK, 77, near.wrapping_add(1000), 100, 65535),
    )
    .unwrap()
    .0;
    // Across 2^32.
    assert!(track(
        &mut w,
        st,
        true,
        &seg(ACK, near.wrapping_add(1000), 177, 1000, 65535)
    )
    .is_ok());
    assert!(track(
        &mut w,
        st,
        true,
        &seg(ACK, near.wrapping_add(2000), 177, 1000, 65535)
    )
    .is_ok());
}

#[test]
fn handshake_opened_from_outside() {
    let mut w = TcpWin::default();
    let st = track(&mut w, SYN_SENT_IN, false, &seg(SYN, S, 0, 0, 65535))
        .unwrap()
        .0;
    assert_eq!(st, SYN_SENT_IN);
    let st = track(&mut w, st, true, &seg(SYN | ACK, C, S + 1, 0, 65535))
        .unwrap()
        .0;
    assert_eq!(st, SYN_RCVD_IN);
    assert_eq!(
        track(&mut w, st, false, &seg(ACK, S + 1, C + 1, 0, 65535)),
        Ok((ESTABLISHED, true))
    );
}

#[test]
fn fresh_syn_fast_path_equals_the_general_path() {
    let mut r = crate::rng::Rng::new(11);
    let mut fast = 0;
    for i in 0..200_000u32 {
        let state = [NONE, SYN_SENT, ESTABLISHED, SYN_SENT_IN][r.below(4usize)];
        // Mostly plain SYNs (the fast path), with every other flag bit mixed in sometimes.
        let flags = if i % 2 == 0 {
            SYN | (r.u8() & !(SYN | ACK | RST | FIN))
        } else {
            r.u8()
        };
        let s = Seg {
            flags,
            seq: r.u32(),
            ack: r.u32(),
            win: r.edgy_u16(),
            len: if r.below(8u32) == 0 {
                r.u32()
            } else {
                r.below(1500u32)
            },
            wscale: if r.bool() {
                Some(r.below(16u32) as u8)
            } else {
                None
            },
        };
        let from_inside = r.below(4u32) != 0;
        let start = if r.below(4u32) == 0 {
            // Not fresh: some state already learnt.
            let mut w = TcpWin::default();
            let _ = track_any(&mut w, SYN_SENT, true, &seg(SYN, r.u32(), 0, 0, 1000));
            w
        } else {
            TcpWin::default()
        };
        let (mut a, mut b) = (start, start);
        let ra = track(&mut a, state, from_inside, &s);
        let rb = track_any(&mut b, state, from_inside, &s);
        assert_eq!((ra, a), (rb, b), "state {state} inside {from_inside} {s:?}");
        fast += u32::from(opens_fresh(&start, state, from_inside, &s));
    }
    assert!(fast > 20_000, "fast path taken {fast} times");
}
