//! Mesh mode at run time: which peers this instance monitors now, as monitor configs.
//!
//! A round finds the members (the addresses of `mesh.peers.dns`, or the entries of
//! `mesh.peers.static`), tells which of them is this instance (an address one of this host's
//! interfaces holds, see [`is_local`], or a static entry equal to the instance's name), picks the
//! peers with the ring of [`config::mesh_peers`] and turns each into an ICMP monitor with the
//! `defaults` settings and a `source` label. [`run`] repeats rounds, by the DNS records' TTL
//! (at most `dns.refresh` apart), and publishes each new peer list; the daemon state applies it
//! beside the configured targets, so a peer that leaves is retired as a removed target is.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{self, MeshConfig, MeshPeers, TargetConfig, TargetOptions};
use crate::resolve::{Family, ResolveError, Resolver, parse_ip_literal};

/// The label that names the pinging instance on the series of mesh monitors.
pub const SOURCE_LABEL: &str = "source";
/// Shortest wait between rounds, whatever a record's TTL says.
const MIN_ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing lookup.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// This machine's (or pod's) hostname: `HOSTNAME` when set, else the kernel's.
pub fn hostname() -> Result<String, String> {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() => Ok(h.trim().to_owned()),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .map_err(|e| format!("HOSTNAME is not set and /proc/sys/kernel/hostname: {e}")),
    }
}

/// The `source` label of this instance: `mesh.name`, else the hostname, else `localhost`.
pub fn own_name(mesh: &MeshConfig) -> String {
    mesh.name
        .clone()
        .or_else(|| hostname().ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// True when `ip` is an address of this host (of this network namespace): binding a UDP socket
/// to it succeeds only then (no packet is sent). With `net.ipv4.ip_nonlocal_bind=1` every IPv4
/// address binds, so name the instance's entry with `mesh.name` there (static peers).
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// One member of the mesh: its ring key (and `target` label) and the host to ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The address (DNS discovery) or the static entry.
    pub key: String,
    /// What the monitor resolves and pings.
    pub host: String,
    /// True when this is this instance.
    pub me: bool,
}

/// The monitors of the peers `me` pings among `members`: at most `max_peers` of them, chosen by
/// the ring, never a member marked `me`. The ring places this instance by its own member key,
/// else (not among the members) by `name`.
pub fn peer_targets(
    members: &[Member],
    name: &str,
    max_peers: Option<usize>,
    defaults: &TargetOptions,
) -> Vec<Arc<TargetConfig>> {
    let me = members
        .iter()
        .find(|m| m.me)
        .map_or_else(|| name.to_owned(), |m| m.key.clone());
    let keys: Vec<String> = members
        .iter()
        .filter(|m| !m.me)
        .map(|m| m.key.clone())
        .collect();
    let hosts: BTreeMap<&str, &str> = members
        .iter()
        .map(|m| (m.key.as_str(), m.host.as_str()))
        .collect();
    let mut chosen: Vec<&String> =
        config::mesh_peers::ring_peers(&keys, &me, max_peers.unwrap_or(usize::MAX));
    chosen.sort();
    chosen
        .into_iter()
        .map(|key| {
            let host = hosts.get(key.as_str()).copied().unwrap_or(key.as_str());
            Arc::new(config::mesh::peer_target(key, host, name, defaults))
        })
        .collect()
}

/// The addresses of `family` among `addrs`: `auto` keeps the IPv4 ones when there are any, else
/// the IPv6 ones (one address per peer on a dual-stack Service); `all` keeps both.
fn select_family(addrs: &[IpAddr], family: Family) -> Vec<IpAddr> {
    let v4: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
    let v6: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv6).collect();
    let mut out = match family {
        Family::Ip4 => v4,
        Family::Ip6 => v6,
        Family::All => [v4, v6].concat(),
        Family::Auto if v4.is_empty() => v6,
        Family::Auto => v4,
    };
    out.sort();
    out.dedup();
    out
}

/// One round: the members now, and until when they may be used.
pub async fn discover(
    mesh: &MeshConfig,
    name: &str,
    family: Family,
    resolver: &Resolver,
    local: &(dyn Fn(IpAddr) -> bool + Send + Sync),
) -> Result<(Vec<Member>, Option<Instant>), ResolveError> {
    match &mesh.peers {
        MeshPeers::Dns(dns) => {
            let resolved = match resolver.lookup(dns, Family::All).await {
                Ok(r) => r,
                // Gone from DNS, or no address left: no member, every peer retired.
                Err(ResolveError::NotFound { .. } | ResolveError::NoAddressForFamily { .. }) => {
                    return Ok((Vec::new(), None));
                }
                Err(e) => return Err(e),
            };
            let members = select_family(&resolved.addrs, family)
                .into_iter()
                .map(|ip| Member {
                    key: ip.to_string(),
                    host: ip.to_string(),
                    me: local(ip),
                })
                .collect();
            Ok((members, Some(resolved.valid_until)))
        }
        MeshPeers::Static(entries) => {
            let mut members = Vec::new();
            let mut until: Option<Instant> = None;
            for entry in entries {
                let me = if entry == name {
                    true
                } else if let Some(ip) = parse_ip_literal(entry) {
                    local(ip)
                } else {
                    // A name is this instance when one of its addresses is; a name that does
                    // not resolve now is a peer (its monitor reports the failure).
                    match resolver.lookup(entry, Family::All).await {
                        Ok(r) => {
                            until = Some(until.map_or(r.valid_until, |u| u.min(r.valid_until)));
                            r.addrs.iter().any(|ip| local(*ip))
                        }
                        Err(_) => false,
                    }
                };
                members.push(Member {
                    key: entry.clone(),
                    host: entry.clone(),
                    me,
                });
            }
            Ok((members, until))
        }
    }
}

/// What [`run`] needs besides the `mesh:` block.
#[derive(Clone)]
pub struct RunOptions {
    /// The `defaults` the peers' monitors take.
    pub defaults: TargetOptions,
    /// `dns.refresh`: longest wait between rounds.
    pub refresh: Duration,
    /// The `source` label.
    pub name: String,
    /// The resolver now in force (a reload may replace it).
    pub resolver: Arc<dyn Fn() -> Resolver + Send + Sync>,
    /// Which addresses are this instance's ([`is_local`] in the daemon).
    pub local: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Runs discovery rounds until `cancel`, sending each changed peer list to `out`. A failed
/// lookup (a timeout, not an answer that the name is gone) keeps the peers of the last round and
/// is retried with backoff.
pub async fn run(
    mesh: MeshConfig,
    opts: RunOptions,
    out: watch::Sender<Vec<Arc<TargetConfig>>>,
    cancel: CancellationToken,
) {
    let mut backoff = MIN_ROUND_INTERVAL;
    loop {
        let resolver = (opts.resolver)();
        let round = tokio::select! {
            r = discover(&mesh, &opts.name, opts.defaults.family, &resolver, &*opts.local) => r,
            () = cancel.cancelled() => return,
        };
        let wait = match round {
            Ok((members, until)) => {
                backoff = MIN_ROUND_INTERVAL;
                let targets = peer_targets(&members, &opts.name, mesh.max_peers, &opts.defaults);
                // A task replaced by a reload must not overwrite its successor's peers.
                if cancel.is_cancelled() {
                    return;
                }
                out.send_if_modified(|now| {
                    if *now == targets {
                        return false;
                    }
                    tracing::info!(
                        members = members.len(),
                        peers = targets.len(),
                        "mesh peers changed"
                    );
                    *now = targets;
                    true
                });
                until
                    .and_then(|u| u.checked_duration_since(Instant::now()))
                    .map_or(opts.refresh, |ttl| ttl.min(opts.refresh))
                    .max(MIN_ROUND_INTERVAL)
            }
            Err(e) => {
                tracing::warn!(error = %e, "mesh peer lookup failed; the peers stay as they were");
                let wait = backoff.min(opts.refresh);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests;
