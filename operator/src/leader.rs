//! Lease-based leader election: with several operator replicas, only the one
//! holding the Lease reconciles; the others wait and take over when it stops
//! renewing.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use tracing::{error, info};

pub(crate) struct Lease {
    pub(crate) client: Client,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) identity: String,
}

/// Seconds a Lease stays valid without renewal; the holder renews `GRACE`
/// seconds before that.
const DURATION: u64 = 15;
const GRACE: u64 = 5;

/// Waits for the Lease, then runs `work` while holding it. Losing the Lease
/// ends the process with an error, so that a replica that could have been
/// partitioned away never keeps reconciling next to the new leader.
pub(crate) async fn run_as_leader(
    lease: Lease,
    work: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(lease.client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(DURATION)
        .with_grace(GRACE)
        .build()
        .await?;
    let (mut channel, task) = manager.watch().await;
    info!(lease = %lease.name, identity = %lease.identity, "waiting to acquire the Lease");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        if *channel.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = channel.changed() => changed?,
            _ = &mut shutdown => {
                drop(channel);
                let _ = task.await;
                return Ok(());
            }
        }
    }
    info!(lease = %lease.name, "acquired the Lease; starting the controller");
    let lost = async {
        loop {
            if channel.changed().await.is_err() || !*channel.borrow_and_update() {
                return;
            }
        }
    };
    let outcome = tokio::select! {
        _ = work => Ok(()),
        _ = lost => {
            error!(lease = %lease.name, "lost the Lease; exiting");
            Err(anyhow::anyhow!("lost the leader Lease {}", lease.name))
        }
    };
    // Closing the channel stops the manager task; releasing lets a standby take over at once.
    drop(channel);
    if let Ok(Ok(manager)) = task.await {
        let _ = manager.release().await;
    }
    outcome
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
