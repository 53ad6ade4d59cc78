//! The daemon's side of mesh mode: the scheduler runs the configured targets (of this shard) and
//! the mesh peers of the moment as one list. A reload replaces the first part, a discovery round
//! ([`crate::mesh::run`]) the second; either applies the whole list as a diff, so a peer that
//! leaves is retired like a removed target (its series deleted) and the others keep theirs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MeshConfig, TargetConfig, TargetOptions};
use crate::mesh::{self, RunOptions};
use crate::scheduler::Scheduler;

/// The discovery task in force and what it was started with.
struct Running {
    key: (MeshConfig, TargetOptions, Duration),
    name: String,
    cancel: CancellationToken,
}

/// See the module docs.
pub(super) struct MeshState {
    // The configured targets last applied, and `dns.refresh`. Held to copy out or replace.
    configured: Mutex<(Vec<Arc<TargetConfig>>, Duration)>,
    // The peers of the last round; the discovery task sends, `follow` applies.
    peers: watch::Sender<Vec<Arc<TargetConfig>>>,
    running: Mutex<Option<Running>>,
    // One apply at a time, so a round and a reload cannot interleave their diffs.
    applying: tokio::sync::Mutex<()>,
}

impl MeshState {
    pub(super) fn new() -> Self {
        Self {
            configured: Mutex::new((Vec::new(), Duration::ZERO)),
            peers: watch::Sender::new(Vec::new()),
            running: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
        }
    }

    /// The mesh peers monitored now.
    pub(super) fn peers(&self) -> Vec<Arc<TargetConfig>> {
        self.peers.borrow().clone()
    }

    /// This instance's `source` label, while mesh mode runs.
    pub(super) fn name(&self) -> Option<String> {
        self.running.lock().as_ref().map(|r| r.name.clone())
    }

    /// Applies the configured targets beside the peers. Returns (added, changed, removed).
    pub(super) async fn apply_configured(
        &self,
        scheduler: &Scheduler,
        targets: Vec<Arc<TargetConfig>>,
        refresh: Duration,
    ) -> (usize, usize, usize) {
        *self.configured.lock() = (targets, refresh);
        self.apply(scheduler).await
    }

    async fn apply(&self, scheduler: &Scheduler) -> (usize, usize, usize) {
        let _one = self.applying.lock().await;
        let (mut all, refresh) = self.configured.lock().clone();
        let taken: HashSet<Arc<str>> = all.iter().map(|t| t.name.clone()).collect();
        for peer in self.peers() {
            if taken.contains(&*peer.name) {
                tracing::warn!(target_name = %peer.name, "a configured target has the name of a mesh peer; the peer is not monitored");
            } else {
                all.push(peer);
            }
        }
        scheduler.apply(&all, refresh).await
    }

    /// Starts, restarts or stops discovery as `config` asks; a task already running with the
    /// same settings goes on. `resolver` gives the resolver in force at each round.
    pub(super) fn follow_config(
        self: &Arc<Self>,
        config: &Config,
        resolver: Arc<dyn Fn() -> crate::resolve::Resolver + Send + Sync>,
        shutdown: &CancellationToken,
    ) {
        let wanted = config
            .mesh
            .as_ref()
            .map(|m| (m.clone(), config.defaults.clone(), config.dns.refresh));
        let mut running = self.running.lock();
        if running.as_ref().map(|r| &r.key) == wanted.as_ref() {
            return;
        }
        if let Some(old) = running.take() {
            old.cancel.cancel();
        }
        let Some(key) = wanted else {
            // Mesh mode switched off: the peers go, and their series with them.
            self.peers.send_replace(Vec::new());
            return;
        };
        let name = mesh::own_name(&key.0);
        let cancel = shutdown.child_token();
        let opts = RunOptions {
            defaults: key.1.clone(),
            refresh: key.2,
            name: name.clone(),
            resolver,
            local: Arc::new(mesh::is_local),
        };
        tracing::info!(source = %name, "mesh mode: discovering peers");
        tokio::spawn(mesh::run(
            key.0.clone(),
            opts,
            self.peers.clone(),
            cancel.clone(),
        ));
        *running = Some(Running { key, name, cancel });
    }

    /// Applies each new peer list until `shutdown`. Subscribes before it returns, so a list
    /// sent before the future first runs is not missed.
    pub(super) fn follow_peers(
        self: Arc<Self>,
        scheduler: Scheduler,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.peers.subscribe();
        async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
                rx.mark_unchanged();
                let (added, changed, removed) = self.apply(&scheduler).await;
                tracing::debug!(added, changed, removed, "mesh peers applied");
            }
        }
    }
}
