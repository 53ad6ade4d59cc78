//! The `mesh:` block (issue 19, mesh mode): every instance monitors its peers, found by DNS (a
//! headless Service's A/AAAA records) or listed, but not itself; `max_peers` keeps a stable
//! subset ([`super::mesh_peers`]). The peers' monitors are ICMP monitors with the `defaults`
//! settings and a `source` label naming this instance; `crate::mesh` runs the discovery.

use serde::Deserialize;
use std::time::Duration;

use super::error::Issues;
use super::raw::S;
use super::rules::{self, line};
use super::validate::{Seen, claim_name};

/// Default of `mesh.web_port`: the port the peers' HTTP API listens on.
pub const DEFAULT_WEB_PORT: u16 = crate::DEFAULT_PORT;
/// Default of `mesh.web_timeout`: how long the mesh view waits for a peer's `/api/v1/targets`.
pub const DEFAULT_WEB_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `mesh.web_timeout`: the page must never wait long for a dead peer.
pub const MAX_WEB_TIMEOUT: Duration = Duration::from_secs(30);

/// `mesh:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMesh {
    pub peers: Option<S<RawPeers>>,
    pub max_peers: Option<S<i64>>,
    pub name: Option<S<String>>,
    pub web_port: Option<S<i64>>,
    pub web_timeout: Option<S<String>>,
}

/// `mesh.peers:` as written: exactly one of the two.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeers {
    pub dns: Option<S<String>>,
    #[serde(rename = "static")]
    pub static_: Option<Vec<S<String>>>,
}

/// Where the peers come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MeshPeers {
    /// Every address of this name (A and AAAA as `defaults.family` selects), re-resolved by its
    /// TTL (at least every `dns.refresh`). The `target` label of a peer is its address.
    Dns(String),
    /// These hosts (addresses or names); the `target` label of a peer is its entry.
    Static(Vec<String>),
}

/// The validated `mesh:` block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    pub peers: MeshPeers,
    /// Peers each instance pings; `None`: all of them.
    pub max_peers: Option<usize>,
    /// The `source` label; `None`: the hostname (`HOSTNAME`, else the kernel's).
    pub name: Option<String>,
    /// The peers' HTTP port, where the mesh view reads their `/api/v1/targets`.
    pub web_port: u16,
    /// How long the mesh view waits for one peer.
    pub web_timeout: Duration,
}

/// Validates `mesh:`. Static entries claim their target names, so a peer cannot share its name
/// with a configured target.
pub(crate) fn build(issues: &mut Issues, raw: &S<RawMesh>, seen: &mut Seen) -> Option<MeshConfig> {
    let m = &raw.value;
    let mut ok = true;
    let peers = match &m.peers {
        None => {
            issues.push(line(raw), "mesh.peers", "required key is missing");
            None
        }
        Some(p) => peers(issues, p, seen),
    };
    let mut max_peers = None;
    if let Some(v) = &m.max_peers {
        match rules::int_at_least(issues, v, "mesh.max_peers", 1) {
            Some(n) => max_peers = Some(n),
            None => ok = false,
        }
    }
    let mut name = None;
    if let Some(n) = &m.name {
        if n.value.trim().is_empty() {
            issues.push(
                line(n),
                "mesh.name",
                "name must not be empty (leave it out to use the hostname)",
            );
            ok = false;
        } else {
            name = Some(n.value.clone());
        }
    }
    let mut web_port = DEFAULT_WEB_PORT;
    if let Some(p) = &m.web_port {
        match rules::port(issues, p, "mesh.web_port") {
            Some(p) => web_port = p,
            None => ok = false,
        }
    }
    let mut web_timeout = DEFAULT_WEB_TIMEOUT;
    if let Some(t) = &m.web_timeout {
        match rules::duration_positive(issues, t, "mesh.web_timeout") {
            Some(d) if d > MAX_WEB_TIMEOUT => {
                issues.push(
                    line(t),
                    "mesh.web_timeout",
                    format!(
                        "web_timeout {} is longer than the page may wait (at most {})",
                        crate::duration::format_duration(d),
                        crate::duration::format_duration(MAX_WEB_TIMEOUT)
                    ),
                );
                ok = false;
            }
            Some(d) => web_timeout = d,
            None => ok = false,
        }
    }
    let peers = peers?;
    ok.then_some(MeshConfig {
        peers,
        max_peers,
        name,
        web_port,
        web_timeout,
    })
}

fn peers(issues: &mut Issues, raw: &S<RawPeers>, seen: &mut Seen) -> Option<MeshPeers> {
    match (&raw.value.dns, &raw.value.static_) {
        (Some(_), Some(_)) | (None, None) => {
            issues.push(
                line(raw),
                "mesh.peers",
                "give exactly one of dns (a name whose addresses are the peers) or static (a list of peers)",
            );
            None
        }
        (Some(name), None) => {
            let key = "mesh.peers.dns";
            if name.value.is_empty() {
                issues.push(line(name), key, "dns must name the peers' DNS name");
                return None;
            }
            if name.value.parse::<std::net::IpAddr>().is_ok() {
                issues.push(
                    line(name),
                    key,
                    format!(
                        "{:?} is an address; dns takes a name (list addresses under static)",
                        name.value
                    ),
                );
                return None;
            }
            match rules::host_options(&name.value, Default::default()) {
                Ok(_) => Some(MeshPeers::Dns(name.value.clone())),
                Err(_) => {
                    issues.push(
                        line(name),
                        key,
                        format!("{:?} is not a DNS name", name.value),
                    );
                    None
                }
            }
        }
        (None, Some(list)) => {
            if list.is_empty() {
                issues.push(
                    line(raw),
                    "mesh.peers.static",
                    "at least one peer is needed",
                );
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (i, entry) in list.iter().enumerate() {
                let key = format!("mesh.peers.static[{i}]");
                if let Err(message) = rules::host_options(&entry.value, Default::default()) {
                    issues.push(line(entry), &key, message);
                    ok = false;
                    continue;
                }
                let here = format!("{}:{}", issues.file(), line(entry));
                if !claim_name(issues, seen, &entry.value, here, line(entry), &key) {
                    ok = false;
                    continue;
                }
                out.push(entry.value.clone());
            }
            ok.then_some(MeshPeers::Static(out))
        }
    }
}

/// The monitor of one mesh peer: an ICMP monitor of `host` named `name`, with the `defaults`
/// settings and the `source` label.
pub fn peer_target(
    name: &str,
    host: &str,
    source: &str,
    defaults: &super::TargetOptions,
) -> super::TargetConfig {
    let options = super::TargetOptions {
        kind: crate::probe::ProbeKind::Icmp,
        port: Default::default(),
        ..defaults.clone()
    };
    super::validate::make_target(
        name.into(),
        host.into(),
        [("source".to_owned(), source.to_owned())].into(),
        options,
    )
}
