//! The replication wire format: one UDP datagram = a 56-byte header and up to
//! `MAX_EVENTS` fixed 40-byte flow events. All integers big-endian. Version 2 (version 1
//! had 32-byte NAT-only events naming the gateway by its slot; a node refuses the other
//! version's datagrams as `bad_version`, so both nodes of a pair must run the same one).
//!
//! ```text
//! header: magic "FGRP" | version u8 | type u8 | count u16
//!         session u64      sender's boot id (a restart is a new sequence stream)
//!         seq u64          sequence number of the first event in this datagram
//!         base u64         sender's oldest event still being sent: below it, given up
//!         ack_session u64  the receiver's session this ack is about (0: none)
//!         ack u64          cumulative: every event of ack_session before `ack` arrived
//!         reserved u64
//! event:  kind u8 | proto u8 | state u8 | flags u8 | scale_in u8 | scale_out u8 | 0 u16
//!         tenant u32       stable key of the gateway / load balancer id (`tenant_key`)
//!         inside_ip u32 | remote_ip u32 | public_ip u32
//!         inside_port u16 | remote_port u16 | public_port u16 | lb_port u16
//!         lb_ip u32        full-NAT LB address (0 for NAT and DNAT flows)
//!         remaining u32    ticks (1/16 s) until the flow's deadline on its owner
//! ```
//!
//! Event kinds: 1 ADD, 2 DEL, 3 REFRESH, 4 DUMP_DONE (NAT flows and the stream's dump
//! marker); 5 LB_ADD, 6 LB_DEL, 7 LB_REFRESH (load-balancer pins).
//!
//! Decoding checks everything (magic, version, type, count against the length, event
//! kinds) and never panics: a bad datagram is refused with a reason the sync thread counts.

use super::{
    FlowEvent, EV_ADD, EV_DEL, EV_DUMP_DONE, EV_LB_ADD, EV_LB_DEL, EV_LB_REFRESH, EV_REFRESH,
};

pub const MAGIC: [u8; 4] = *b"FGRP";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 56;
pub const EVENT_LEN: usize = 40;
/// Events per datagram: header + events within 1400 bytes (no IP fragmentation).
pub const MAX_EVENTS: usize = (1400 - HEADER_LEN) / EVENT_LEN;

/// Datagram types.
pub const T_DATA: u8 = 1;
/// "Send me everything you hold" (a node that (re)starts); count is 0.
pub const T_RESYNC: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub kind: u8,
    pub count: u16,
    pub session: u64,
    pub seq: u64,
    pub base: u64,
    pub ack_session: u64,
    pub ack: u64,
}

/// Why a datagram was refused (counted per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Short,
    Magic,
    Version,
    Type,
    Length,
    EventKind,
}

impl Bad {
    pub const ALL: [Bad; 6] = [
        Bad::Short,
        Bad::Magic,
        Bad::Version,
        Bad::Type,
        Bad::Length,
        Bad::EventKind,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Bad::Short => "short",
            Bad::Magic => "bad_magic",
            Bad::Version => "bad_version",
            Bad::Type => "bad_type",
            Bad::Length => "bad_length",
            Bad::EventKind => "bad_event",
        }
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Encodes a datagram into `out` (cleared first). At most `MAX_EVENTS` events are taken.
pub fn encode(h: &Header, events: &[FlowEvent], out: &mut Vec<u8>) {
    let events = &events[..events.len().min(MAX_EVENTS)];
    out.clear();
    out.resize(HEADER_LEN + events.len() * EVENT_LEN, 0);
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = h.kind;
    put16(out, 6, events.len() as u16);
    put64(out, 8, h.session);
    put64(out, 16, h.seq);
    put64(out, 24, h.base);
    put64(out, 32, h.ack_session);
    put64(out, 40, h.ack);
    for (i, e) in events.iter().enumerate() {
        let b = &mut out[HEADER_LEN + i * EVENT_LEN..HEADER_LEN + (i + 1) * EVENT_LEN];
        b[0] = e.kind;
        b[1] = e.proto;
        b[2] = e.state;
        b[3] = e.flags;
        b[4] = e.scale[0];
        b[5] = e.scale[1];
        put32(b, 8, e.tenant);
        put32(b, 12, e.inside_ip);
        put32(b, 16, e.remote_ip);
        put32(b, 20, e.public_ip);
        put16(b, 24, e.inside_port);
        put16(b, 26, e.remote_port);
        put16(b, 28, e.public_port);
        put16(b, 30, e.lb_port);
        put32(b, 32, e.lb_ip);
        put32(b, 36, e.remaining);
    }
}

/// Decodes a datagram: its header and its events (appended to `events`).
pub fn decode(b: &[u8], events: &mut Vec<FlowEvent>) -> Result<Header, Bad> {
    if b.len() < HEADER_LEN {
        return Err(Bad::Short);
    }
    if b[0..4] != MAGIC {
        return Err(Bad::Magic);
    }
    if b[4] != VERSION {
        return Err(Bad::Version);
    }
    let kind = b[5];
    let count = get16(b, 6);
    match kind {
        T_DATA => {}
        T_RESYNC if count == 0 => {}
        T_RESYNC => return Err(Bad::Length),
        _ => return Err(Bad::Type),
    }
    if usize::from(count) > MAX_EVENTS || b.len() != HEADER_LEN + usize::from(count) * EVENT_LEN {
        return Err(Bad::Length);
    }
    let h = Header {
        kind,
        count,
        session: get64(b, 8),
        seq: get64(b, 16),
        base: get64(b, 24),
        ack_session: get64(b, 32),
        ack: get64(b, 40),
    };
    let start = events.len();
    for c in b[HEADER_LEN..].chunks_exact(EVENT_LEN) {
        let e = FlowEvent {
            kind: c[0],
            proto: c[1],
            state: c[2],
            flags: c[3],
            scale: [c[4], c[5]],
            tenant: get32(c, 8),
            inside_ip: get32(c, 12),
            remote_ip: get32(c, 16),
            public_ip: get32(c, 20),
            inside_port: get16(c, 24),
            remote_port: get16(c, 26),
            public_port: get16(c, 28),
            lb_port: get16(c, 30),
            lb_ip: get32(c, 32),
            remaining: get32(c, 36),
        };
        if !matches!(
            e.kind,
            EV_ADD | EV_DEL | EV_REFRESH | EV_DUMP_DONE | EV_LB_ADD | EV_LB_DEL | EV_LB_REFRESH
        ) {
            events.truncate(start);
            return Err(Bad::EventKind);
        }
        events.push(e);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> FlowEvent {
        FlowEvent {
            kind: [EV_ADD, EV_DEL, EV_REFRESH][n as usize % 3],
            tenant: crate::repl::tenant_key("gw") ^ n,
            proto: 6,
            state: 3 | 0x10,
            scale: [0x87, 0x80],
            inside_ip: 0x0a00_0102,
            remote_ip: 0xcb00_710a + n,
            public_ip: 0xc000_020a,
            inside_port: 40_000 + n as u16,
            remote_port: 443,
            public_port: 1024 + n as u16,
            remaining: 5600 + n,
            ..FlowEvent::default()
        }
    }

    /// A full-NAT LB pin: every field distinct, so a swapped offset shows.
    fn lb_ev(kind: u8) -> FlowEvent {
        FlowEvent {
            kind,
            proto: 6,
            state: 0,
            flags: 1 | 4,
            scale: [0, 0],
            tenant: crate::repl::tenant_key("web"),
            inside_ip: 0xc000_0264,
            remote_ip: 0x0a00_0102,
            public_ip: 0xcb00_710b,
            inside_port: 80,
            remote_port: 51_234,
            public_port: 8080,
            lb_port: 40_001,
            lb_ip: 0xc000_0214,
            remaining: 350 * 16,
        }
    }

    #[test]
    fn lb_events_roundtrip_at_their_offsets() {
        let evs = [
            lb_ev(EV_LB_ADD),
            lb_ev(EV_LB_REFRESH),
            lb_ev(EV_LB_DEL),
            ev(1),
        ];
        let mut buf = Vec::new();
        encode(&header(), &evs, &mut buf);
        assert_eq!(buf.len(), HEADER_LEN + 4 * EVENT_LEN);
        assert_eq!(buf[4], 2, "version 2");
        let b = &buf[HEADER_LEN..HEADER_LEN + EVENT_LEN];
        assert_eq!(b[0], EV_LB_ADD);
        assert_eq!(b[3], 5, "flags");
        assert_eq!(get32(b, 8), crate::repl::tenant_key("web"));
        assert_eq!(get16(b, 30), 40_001, "lb_port");
        assert_eq!(get32(b, 32), 0xc000_0214, "lb_ip");
        let mut got = Vec::new();
        decode(&buf, &mut got).unwrap();
        assert_eq!(got, evs);
        assert!(got[..3].iter().all(|e| crate::repl::is_lb(e.kind)));
        assert!(!crate::repl::is_lb(got[3].kind));
        // Version 1 datagrams are refused, not misread.
        let mut old = buf.clone();
        old[4] = 1;
        assert_eq!(decode(&old, &mut got), Err(Bad::Version));
    }

    fn header() -> Header {
        Header {
            kind: T_DATA,
            count: 0,
            session: 0x1122_3344_5566_7788,
            seq: 1_000_000_007,
            base: 999,
            ack_session: 42,
            ack: 77,
        }
    }

    #[test]
    fn roundtrip_full_and_empty() {
        let evs: Vec<FlowEvent> = (0..MAX_EVENTS as u32 + 5).map(ev).collect();
        let mut buf = Vec::new();
        encode(&header(), &evs, &mut buf);
        assert!(buf.len() <= 1400, "{}", buf.len());
        let mut got = Vec::new();
        let h = decode(&buf, &mut got).unwrap();
        assert_eq!(h.count as usize, MAX_EVENTS);
        assert_eq!(Header { count: 0, ..h }, header());
        assert_eq!(got, evs[..MAX_EVENTS]);
        encode(&header(), &[], &mut buf);
        got.clear();
        assert_eq!(decode(&buf, &mut got).map(|h| h.count), Ok(0));
        assert!(got.is_empty());
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        let mut buf = Vec::new();
        encode(&header(), &[ev(1), ev(2)], &mut buf);
        let mut got = Vec::new();
        let mut cases: Vec<(Vec<u8>, Bad)> = vec![
            (buf[..10].to_vec(), Bad::Short),
            (buf[..buf.len() - 1].to_vec(), Bad::Length),
        ];
        let mut b = buf.clone();
        b[0] = b'X';
        cases.push((b, Bad::Magic));
        let mut b = buf.clone();
        b[4] = 1;
        cases.push((b, Bad::Version));
        let mut b = buf.clone();
        b[5] = 9;
        cases.push((b, Bad::Type));
        let mut b = buf.clone();
        b[7] = 200;
        cases.push((b, Bad::Length));
        let mut b = buf.clone();
        b[HEADER_LEN + EVENT_LEN] = 77;
        cases.push((b, Bad::EventKind));
        let mut b = buf.clone();
        b[5] = T_RESYNC;
        cases.push((b, Bad::Length));
        for (b, want) in cases {
            assert_eq!(decode(&b, &mut got), Err(want));
            assert!(got.is_empty(), "nothing kept from a refused datagram");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = crate::rng::Rng::new(7);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        encode(&header(), &[ev(0), ev(1), ev(2)], &mut buf);
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                buf.clone()
            } else {
                vec![0u8; rng.below(200)]
            };
            for _ in 0..1 + rng.below(4) {
                if !b.is_empty() {
                    let at = rng.below(b.len());
                    b[at] = rng.next_u64() as u8;
                }
            }
            let _ = decode(&b, &mut got);
            got.clear();
        }
    }
}
