//! Live replacement of a load balancer (new `lb_addresses` or `flows_per_core`, see
//! `reconcile`): old flows finish on the old slot, new ones take the new settings.

use super::control::LbControl;
use super::tests::{cfg, conf, s, setup, t, tcp, tuple, udp, CLIENT, GROUPS, HZ, LBA, VIP};
use super::*;
use crate::config::parse_str;
use crate::wire::tcp::{ACK, SYN};
use std::time::{Duration, Instant};

const LBA2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);

fn update(c: &mut LbControl, w: &mut LbWorker) {
    let mut rng = crate::nat::ports::Rng::new(3);
    let mut u = c
        .update_for(0, 1, &mut rng)
        .expect("tables for the new slot");
    c.sent();
    w.reconcile(&mut u);
}

#[test]
fn new_lb_addresses_and_size_replace_it_and_old_flows_finish_on_the_old_slot() {
    let (mut c, mut w) = setup(GROUPS);
    let mut b = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
    let (src, lport, _, _) = tuple(&b);
    assert_eq!(src, LBA);
    let mut b = tcp(CLIENT, 1000, VIP, 80, SYN);
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
    let other = conf(GROUPS)
        .replace(
            "lb_addresses: [198.51.100.11]",
            "lb_addresses: [198.51.100.13]",
        )
        .replace("flows_per_core: 4096", "flows_per_core: 8192");
    let other = parse_str(&other, "t.yaml").unwrap();
    let log = c.reload(&other.load_balancers, s(2)).unwrap();
    assert!(log.iter().any(|l| l.contains("replaced")), "{log:?}");
    assert_eq!(c.config()[0].id, "web~replaced");
    assert_eq!(c.config()[1].id, "web");
    update(&mut c, &mut w);
    assert_eq!(w.capacity(), 4096 + 8192);
    // Old flows: both directions on the old slot and its LB address.
    let mut b = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    assert_eq!(tuple(&b).0, LBA);
    assert_eq!(tuple(&b).1, lport);
    let mut r = udp(t(5), 5353, LBA, lport);
    assert_eq!(w.process(&mut r, s(3)), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 53, CLIENT, 5000));
    let mut b = tcp(CLIENT, 1000, VIP, 80, ACK);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    // New flows: the new slot, the new LB address.
    let mut b = udp(CLIENT, 5001, VIP, 53);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    let (src, p2, _, _) = tuple(&b);
    assert_eq!(src, LBA2);
    let mut r = udp(t(5), 5353, LBA2, p2);
    assert_eq!(w.process(&mut r, s(3)), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 53, CLIENT, 5001));
    let mut b = tcp(CLIENT, 1001, VIP, 80, SYN);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    assert_eq!(w.counters()[1].new_flows, 2);
    assert_eq!(w.counters()[0].new_flows, 2, "only the two from before");
    // Another change while the old one drains is refused.
    let third = conf(GROUPS).replace("flows_per_core: 4096", "flows_per_core: 1024");
    let third = parse_str(&third, "t.yaml").unwrap();
    let e = c.reload(&third.load_balancers, s(4)).unwrap_err();
    assert!(e.contains("still drains"), "{e}");
    // Drain over: the old slot empties; the next load balancer added reuses it.
    let log = c.tick(Instant::now() + Duration::from_secs(301), s(5));
    assert!(log.iter().any(|l| l.contains("drain ended")), "{log:?}");
    update(&mut c, &mut w);
    assert_eq!(c.config()[0].id, "");
    let mut b = tcp(CLIENT, 1001, VIP, 80, ACK);
    assert_eq!(w.process(&mut b, s(6)), StageVerdict::Translated);
    let mut two = other.load_balancers[0].clone();
    two.id = "two".into();
    two.vips = vec![Ipv4Addr::new(198, 51, 100, 20)];
    two.lb_addresses = vec![Ipv4Addr::new(198, 51, 100, 21)];
    c.reload(&[other.load_balancers[0].clone(), two], s(7))
        .unwrap();
    assert_eq!(c.config().len(), 2);
    assert_eq!(c.config()[0].id, "two");
}

#[test]
fn a_size_change_keeps_full_nat_ports_of_old_flows_apart() {
    let (mut c, mut w) = setup(GROUPS);
    let mut b = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
    let lport = tuple(&b).1;
    let other = cfg(GROUPS);
    let mut lbs = other.load_balancers.clone();
    lbs[0].flows_per_core = 8192;
    c.reload(&lbs, s(2)).unwrap();
    update(&mut c, &mut w);
    // Both slots hold LBA: the reply of the old flow still finds it.
    let mut r = udp(t(5), 5353, LBA, lport);
    assert_eq!(w.process(&mut r, s(3)), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 53, CLIENT, 5000));
    // New flows (new slot, same address) never take the old flow's port.
    for p in 6000..6400 {
        let mut b = udp(CLIENT, p, VIP, 53);
        assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
        assert_ne!(tuple(&b).1, lport);
    }
    assert_eq!(w.counters()[1].new_flows, 400);
    let _ = HZ;
}
