//! IPv4 fragmentation for packets larger than the egress MTU with DF clear (slow path:
//! it allocates one buffer per fragment).

use crate::packet::{BufAlloc, PacketBuf};
use crate::wire::Ipv4Packet;

const ETH: usize = 14;

/// Split the Ethernet+IPv4 frame `pkt` into fragments whose IP packets fit in `mtu`,
/// handing each to `emit`. Keeps the original's fragment offset and MF bit, so an
/// already-fragmented packet is split correctly. Returns the number of fragments, or
/// None when a buffer could not be had (fragments already emitted still go out; the
/// receiver's reassembly timer discards the incomplete set).
pub fn fragment<B, A>(pkt: &B, mtu: u32, alloc: &mut A, mut emit: impl FnMut(B)) -> Option<usize>
where
    B: PacketBuf,
    A: BufAlloc<Buf = B>,
{
    let d = pkt.data();
    let ip = Ipv4Packet::new_checked(&d[ETH..]).ok()?;
    let hl = ip.header_len();
    let total = ip.total_len() as usize;
    let payload = &d[ETH + hl..ETH + total];
    let base_off = ip.frag_offset() as usize;
    let orig_mf = ip.more_frags();
    // Fragment data must be a multiple of 8 bytes (all but the last).
    let max_data = (mtu as usize).checked_sub(hl)? & !7;
    if max_data == 0 {
        return None;
    }
    let mut off = 0;
    let mut n = 0;
    while off < payload.len() {
        let len = max_data.min(payload.len() - off);
        let last = off + len == payload.len();
        let mut f = alloc.alloc()?;
        if !f.set_len(ETH + hl + len) {
            return None;
        }
        let fd = f.data_mut();
        fd[..ETH + hl].copy_from_slice(&d[..ETH + hl]);
        fd[ETH + hl..].copy_from_slice(&payload[off..off + len]);
        let mut fip = Ipv4Packet::new_unchecked(&mut fd[ETH..]);
        fip.set_total_len((hl + len) as u16);
        fip.set_flags_frag(false, !last || orig_mf, (base_off + off) as u16);
        fip.fill_checksum();
        emit(f);
        n += 1;
        off += len;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{VecAlloc, VecBuf};

    fn ip_frame(payload_len: usize, off: u16, mf: bool) -> VecBuf {
        let mut v = vec![0u8; ETH + 20 + payload_len];
        v[12] = 0x08;
        for (i, b) in v[ETH + 20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut v[ETH..]);
        ip.set_version_ihl(5);
        ip.set_total_len((20 + payload_len) as u16);
        ip.set_ident(0x1234);
        ip.set_flags_frag(false, mf, off);
        ip.set_ttl(63);
        ip.set_protocol(17);
        ip.set_src_addr("10.0.1.2".parse().unwrap());
        ip.set_dst_addr("198.51.100.2".parse().unwrap());
        ip.fill_checksum();
        VecBuf::from_frame(&v)
    }

    #[test]
    fn splits_into_mtu_sized_8_aligned_fragments_that_reassemble() {
        let p = ip_frame(1300, 0, false);
        let mut out = vec![];
        let n = fragment(&p, 576, &mut VecAlloc::default(), |f| out.push(f)).unwrap();
        assert_eq!(n, 3);
        let mut data = vec![];
        for (i, f) in out.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&f.data()[ETH..]).unwrap();
            assert!(ip.total_len() <= 576);
            assert!(ip.verify_checksum());
            assert_eq!(ip.ident(), 0x1234);
            assert_eq!(ip.frag_offset() as usize, data.len());
            assert_eq!(ip.more_frags(), i < 2);
            if i < 2 {
                assert_eq!(ip.payload().len() % 8, 0);
            }
            data.extend_from_slice(ip.payload());
        }
        assert_eq!(data, p.data()[ETH + 20..].to_vec());
    }

    #[test]
    fn refragmenting_a_fragment_keeps_offset_and_mf() {
        let p = ip_frame(1000, 800, true);
        let mut out = vec![];
        fragment(&p, 520, &mut VecAlloc::default(), |f| out.push(f)).unwrap();
        let last = Ipv4Packet::new_checked(&out.last().unwrap().data()[ETH..])
            .unwrap()
            .more_frags();
        assert!(last, "the original had MF set, so its last piece must too");
        let first = Ipv4Packet::new_checked(&out[0].data()[ETH..]).unwrap();
        assert_eq!(first.frag_offset(), 800);
    }

    #[test]
    fn out_of_buffers_reports_failure() {
        let p = ip_frame(3000, 0, false);
        let mut a = VecAlloc {
            limit: Some(1),
            ..Default::default()
        };
        let mut out = vec![];
        assert!(fragment(&p, 1500, &mut a, |f| out.push(f)).is_none());
        assert_eq!(out.len(), 1);
    }
}
