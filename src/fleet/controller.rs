//! `flowgate controller`: the single placement writer of a fleet.
//!
//! Controllers campaign in an etcd election (`/flowgate/<fleet>/election`); the leader
//! reconciles whenever something under the fleet changes (watch) and at least every
//! `resync`: it reads live nodes (leased keys), tenants and placements, keeps every placement
//! whose nodes are all live, repairs those that lost a node (survivors stay, a replacement
//! is searched within the overlap bound m: see [`StatefulSharder::repair`]), places new
//! tenants in id order, deletes placements of removed tenants, and writes all changes in one
//! transaction guarded by its leadership (the election key's create revision), so a deposed
//! leader can never overwrite its successor.
use super::keys::{decode_shard, decode_slots, encode_shard, Keys};
use super::stateful::StatefulSharder;
use super::store;
use etcd_client::{Client, Compare, CompareOp, LeaderKey, PutOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ControllerOpts {
    pub endpoints: Vec<String>,
    pub fleet: String,
    pub id: String,
    pub seed: u64,
    pub k: usize,
    pub m: usize,
    /// Lease TTL (s) of the leadership.
    pub ttl: i64,
    /// Live nodes needed before the first placement (so a cold start does not pile every
    /// tenant onto the first nodes that registered).
    pub min_nodes: usize,
    pub resync: Duration,
}

/// What one reconcile decided (pure: unit-tested without etcd).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub put: BTreeMap<String, Vec<String>>,
    pub delete: Vec<String>,
    pub errors: Vec<String>,
    pub placements: BTreeMap<String, Vec<String>>,
}

/// Computes the placement changes from the store's current content.
pub fn plan(
    o: &ControllerOpts,
    nodes: &BTreeMap<String, String>,
    tenants: &BTreeMap<String, String>,
    placements: &BTreeMap<String, String>,
) -> Plan {
    let mut p = Plan::default();
    let mut s = StatefulSharder::new(o.seed, o.k, o.m);
    let live: Vec<String> = nodes.keys().cloned().collect();
    for (t, v) in placements {
        if tenants.contains_key(t) {
            s.record(t, &decode_shard(v));
        } else {
            p.delete.push(t.clone());
        }
    }
    let cold = placements.is_empty() && live.len() < o.min_nodes.max(o.k);
    for t in tenants.keys() {
        let had = s.get(t).cloned();
        let r = match &had {
            Some(_) => s
                .repair(t, &live)
                .map(|(shard, changed)| changed.then_some(shard)),
            None if cold => continue,
            None => s.place(t, &live).map(Some),
        };
        match r {
            Ok(Some(shard)) => {
                p.put.insert(t.clone(), shard);
            }
            Ok(None) => {}
            Err(e) => {
                p.errors.push(e.to_string());
                // `repair` keeps the survivors on failure: publish the degraded shard.
                if let (Some(old), Some(now)) = (&had, s.get(t)) {
                    if old != now {
                        p.put.insert(t.clone(), now.clone());
                    }
                }
            }
        }
    }
    p.placements = s.placements().clone();
    p
}

/// The new shard in slot order: a node that stays keeps its position (its slice of the
/// tenant's port range, so its flows' return traffic still reaches it), newcomers fill the
/// vacated positions in name order.
pub fn keep_slots(old: Option<&String>, new: &[String]) -> Vec<String> {
    let old = old.map(|v| decode_slots(v)).unwrap_or_default();
    let mut fresh = new.iter().filter(|n| !old.contains(n));
    let mut out: Vec<String> = old
        .iter()
        .map(|n| {
            if new.contains(n) {
                Some(n.clone())
            } else {
                fresh.next().cloned()
            }
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    if out.len() != new.len() {
        out = new.to_vec();
    }
    out
}

async fn reconcile(
    c: &mut Client,
    keys: &Keys,
    o: &ControllerOpts,
    leader: &LeaderKey,
    last_err: &mut Vec<String>,
) -> store::Result<()> {
    let nodes = store::list(c, &keys.nodes()).await?;
    let tenants = store::list(c, &keys.tenants()).await?;
    let placements = store::list(c, &keys.placements()).await?;
    let p = plan(o, &nodes, &tenants, &placements);
    if p.errors != *last_err {
        for e in &p.errors {
            error!("controller: {e}");
        }
        *last_err = p.errors.clone();
    }
    if p.put.is_empty() && p.delete.is_empty() {
        return Ok(());
    }
    let mut ops: Vec<TxnOp> = Vec::new();
    for (t, shard) in &p.put {
        ops.push(TxnOp::put(
            keys.placement(t),
            encode_shard(&keep_slots(placements.get(t), shard)),
            None::<PutOptions>,
        ));
    }
    for t in &p.delete {
        ops.push(TxnOp::delete(keys.placement(t), None));
    }
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            leader.key(),
            CompareOp::Equal,
            leader.rev(),
        )])
        .and_then(ops);
    let r = c.txn(txn).await.map_err(|e| format!("etcd txn: {e}"))?;
    if !r.succeeded() {
        return Err("lost leadership (election key gone): stepping down".into());
    }
    for (t, shard) in &p.put {
        let old = placements.get(t).map(String::as_str).unwrap_or("-");
        info!(
            "controller: placement {t}: {old} -> {} ({} live nodes)",
            encode_shard(&keep_slots(placements.get(t), shard)),
            nodes.len()
        );
    }
    for t in &p.delete {
        info!("controller: placement {t} deleted (tenant removed)");
    }
    Ok(())
}

/// One leadership term: connect, campaign, reconcile until something breaks.
/// `lease`: the previous term's lease, reused if etcd still has it (after an etcd restart our
/// election key is still there: reusing its lease wins the election at once instead of
/// waiting a TTL for the orphaned key to expire).
async fn term(o: &ControllerOpts, lease: &mut Option<i64>) -> store::Result<()> {
    let keys = Keys::new(&o.fleet);
    let mut c = store::connect(&o.endpoints, Some(Duration::from_secs(2))).await?;
    let l = store::lease(&mut c, o.ttl, *lease).await?;
    *lease = Some(l.id);
    let mut lost = l.lost.clone();
    // No request timeout on the campaign: it returns when we win.
    let mut camp = store::connect(&o.endpoints, None).await?;
    info!(
        "controller {}: campaigning for leadership of fleet {}",
        o.id, o.fleet
    );
    let won = tokio::select! {
        r = camp.campaign(keys.election(), o.id.clone(), l.id) => r.map_err(|e| format!("etcd campaign: {e}"))?,
        _ = lost.changed() => return Err("lease lost while campaigning".into()),
    };
    let leader = won
        .leader()
        .cloned()
        .ok_or("campaign returned no leader key")?;
    info!(
        "controller {}: leader of fleet {} (k={} m={} seed={})",
        o.id, o.fleet, o.k, o.m, o.seed
    );
    let (_w, mut stream) = store::watch(&mut c, &keys.root).await?;
    let mut last_err = Vec::new();
    loop {
        let t0 = Instant::now();
        reconcile(&mut c, &keys, o, &leader, &mut last_err).await?;
        debug!("controller: reconciled in {:?}", t0.elapsed());
        tokio::select! {
            r = store::wait_change(&mut stream, o.resync) => r?,
            _ = lost.changed() => return Err("leadership lease lost".into()),
        }
    }
}

/// Runs forever: a broken term (etcd unreachable, leadership lost) starts a new campaign.
pub fn run(o: ControllerOpts) -> ! {
    let rt = store::runtime();
    let mut last = String::new();
    let mut lease = None;
    loop {
        match rt.block_on(term(&o, &mut lease)) {
            // The same error every second while etcd is down: say it once.
            Err(e) if e != last => {
                warn!("controller {}: {e}; retrying every 1 s", o.id);
                last = e;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ControllerOpts {
        ControllerOpts {
            endpoints: vec![],
            fleet: "t".into(),
            id: "c1".into(),
            seed: 1,
            k: 2,
            m: 1,
            ttl: 3,
            min_nodes: 5,
            resync: Duration::from_secs(1),
        }
    }

    fn map(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn keep_slots_keeps_survivors_in_place() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let old = "n3,n1".to_string();
        assert_eq!(keep_slots(Some(&old), &v(&["n1", "n2"])), v(&["n2", "n1"]));
        assert_eq!(keep_slots(Some(&old), &v(&["n1", "n3"])), v(&["n3", "n1"]));
        assert_eq!(keep_slots(None, &v(&["n1", "n2"])), v(&["n1", "n2"]));
        // Size changed (degraded shard): plain order.
        assert_eq!(keep_slots(Some(&old), &v(&["n1"])), v(&["n1"]));
        assert_eq!(keep_slots(Some(&old), &v(&["n4", "n5"])), v(&["n4", "n5"]));
    }

    #[test]
    fn places_repairs_and_deletes() {
        let o = opts();
        // 7 nodes, k=2, m=1: 21 node pairs, room for every repair to keep its survivor.
        let nodes: BTreeMap<String, String> =
            (1..=7).map(|i| (format!("n{i}"), "a".into())).collect();
        let tenants: BTreeMap<String, String> = (0..6)
            .map(|i| (format!("t{i}"), "kind: nat".to_string()))
            .collect();
        let p = plan(&o, &nodes, &tenants, &BTreeMap::new());
        assert_eq!(p.put.len(), 6, "{p:?}");
        assert!(p.errors.is_empty());
        // Steady state: nothing to write.
        let stored: BTreeMap<String, String> = p
            .put
            .iter()
            .map(|(t, s)| (t.clone(), encode_shard(s)))
            .collect();
        assert_eq!(plan(&o, &nodes, &tenants, &stored).put.len(), 0);
        // n3 dies: only its tenants change, and only by n3.
        let mut fewer = nodes.clone();
        fewer.remove("n3");
        let q = plan(&o, &fewer, &tenants, &stored);
        for (t, s) in &p.put {
            match q.put.get(t) {
                Some(new) => {
                    assert!(s.contains(&"n3".to_string()));
                    assert!(!new.contains(&"n3".to_string()));
                    assert_eq!(
                        s.iter().filter(|n| !new.contains(n)).count(),
                        1,
                        "{t}: {s:?} -> {new:?}; {:?} {:?}",
                        p.placements,
                        q
                    );
                }
                None => assert!(!s.contains(&"n3".to_string())),
            }
        }
        // A removed tenant's placement is deleted.
        let mut less = tenants.clone();
        less.remove("t0");
        assert_eq!(plan(&o, &nodes, &less, &stored).delete, ["t0"]);
    }

    #[test]
    fn waits_for_min_nodes_on_cold_start() {
        let o = opts();
        let nodes = map(&[("n1", "a"), ("n2", "a")]);
        let tenants = map(&[("t0", "kind: nat")]);
        assert!(plan(&o, &nodes, &tenants, &BTreeMap::new()).put.is_empty());
    }
}
