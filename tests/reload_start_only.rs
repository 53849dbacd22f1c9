//! Issue 8 item 8: a SIGHUP that changes settings read only when the workers start
//! (neighbor, worker) or when the EAL starts (mempool, lcores) is refused with a log line
//! saying why; the running config stays. Tenants (NAT gateways, load balancers) reload
//! live: tests/reload_tenants.rs.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

#[test]
fn reload_changing_start_only_settings_is_refused() {
    let Some(_g) = setup("reload_changing_start_only_settings_is_refused") else {
        return;
    };
    let rig = Rig::standard("rlstart", 1500, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    let good = fs::read_to_string(&rig.app.config_path).unwrap();
    let before = rig.app.metrics();
    for (from, to, why) in [
        (
            "  timeout_s: 300\n",
            "  timeout_s: 30\n",
            "neighbor settings changed",
        ),
        ("  burst: 32\n", "  burst: 8\n", "worker settings changed"),
        (
            "  mbufs: 8191\n",
            "  mbufs: 4095\n",
            "mempool or eal changed",
        ),
        ("  workers: [1]\n", "  workers: [1, 2]\n", "lcores changed"),
    ] {
        let changed = good.replacen(from, to, 1);
        assert_ne!(changed, good, "{from}");
        fs::write(&rig.app.config_path, &changed).unwrap();
        rig.app.signal(libc::SIGHUP);
        let seen = wait_for(Duration::from_secs(10), || {
            rig.app
                .log()
                .lines()
                .any(|l| l.contains("reload refused") && l.contains(why) && l.contains("restart"))
                .then_some(())
        });
        assert!(
            seen.is_some(),
            "no refusal naming {why:?}:\n{}",
            rig.app.log()
        );
        fs::write(&rig.app.config_path, &good).unwrap();
    }
    let m = rig.app.metrics();
    let refused = |m: &Metrics| m.value("flowgate_config_reloads_total", &[("result", "refused")]);
    assert_eq!(refused(&m) - refused(&before), 4.0);
    assert!(
        !rig.app.log().contains("config reloaded"),
        "a refused reload must not be reported as applied:\n{}",
        rig.app.log()
    );
    assert_ping(rig.client(), SERVER_IP, 2);
}
