//! Thin helpers over the `etcd-client` crate (control side only; never on a worker).
use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions, WatchStream, Watcher};
use std::collections::BTreeMap;
use std::time::Duration;

pub type Result<T> = std::result::Result<T, String>;

fn err(what: &str, e: etcd_client::Error) -> String {
    format!("etcd {what}: {e}")
}

/// A client whose requests fail after `timeout` (so an unreachable etcd is noticed quickly).
/// `timeout` None: no request timeout (for an election campaign, which blocks until won).
pub async fn connect(endpoints: &[String], timeout: Option<Duration>) -> Result<Client> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    if let Some(t) = timeout {
        o = o.with_timeout(t);
    }
    Client::connect(endpoints, Some(o))
        .await
        .map_err(|e| err("connect", e))
}

/// Every key under `prefix`, as text, with the prefix removed and bad ids dropped.
pub async fn list(c: &mut Client, prefix: &str) -> Result<BTreeMap<String, String>> {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| err("get", e))?;
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect();
    Ok(super::keys::strip(prefix, kvs))
}

/// A watch on everything under `prefix` (used only as a wake-up: state is re-read whole).
pub async fn watch(c: &mut Client, prefix: &str) -> Result<(Watcher, WatchStream)> {
    c.watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| err("watch", e))
}

/// Waits for a watch event or `period`, whichever comes first. Err when the watch broke
/// (etcd gone): the caller reconnects.
pub async fn wait_change(stream: &mut WatchStream, period: Duration) -> Result<()> {
    match tokio::time::timeout(period, stream.message()).await {
        Err(_) => Ok(()),
        Ok(Ok(Some(r))) if r.canceled() => {
            Err(format!("etcd watch canceled: {}", r.cancel_reason()))
        }
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err("etcd watch closed".into()),
        Ok(Err(e)) => Err(err("watch", e)),
    }
}

/// A lease kept alive by a background task; `lost` turns true when the lease is gone
/// (expired, or etcd unreachable for longer than a keep-alive round trip can tolerate): the
/// holder must start over. The task stops when this is dropped.
pub struct Lease {
    pub id: i64,
    pub lost: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps lease `reuse` if etcd still has it (etcd restarts renew leases, so a holder that
/// reconnects keeps its keys, e.g. its election key, instead of waiting for them to expire);
/// otherwise grants a new one of `ttl` seconds. Keep-alive every ttl/3.
pub async fn lease(c: &mut Client, ttl: i64, reuse: Option<i64>) -> Result<Lease> {
    let mut id = None;
    if let Some(old) = reuse {
        if let Ok(r) = c.lease_time_to_live(old, None).await {
            if r.ttl() > 0 {
                id = Some(old);
            }
        }
    }
    let id = match id {
        Some(id) => id,
        None => c
            .lease_grant(ttl, None)
            .await
            .map_err(|e| err("lease grant", e))?
            .id(),
    };
    let (mut keeper, mut stream) = c
        .lease_keep_alive(id)
        .await
        .map_err(|e| err("lease keep-alive", e))?;
    let (tx, lost) = tokio::sync::watch::channel(false);
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(200));
    let task = tokio::spawn(async move {
        loop {
            let alive = async {
                keeper.keep_alive().await.ok()?;
                let r = tokio::time::timeout(period, stream.message())
                    .await
                    .ok()?
                    .ok()??;
                (r.ttl() > 0).then_some(())
            }
            .await;
            if alive.is_none() {
                let _ = tx.send(true);
                return;
            }
            tokio::time::sleep(period).await;
        }
    });
    Ok(Lease { id, lost, task })
}

/// Current-thread tokio runtime for one control-side daemon.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
