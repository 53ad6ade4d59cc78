//! Mesh mode through real sockets (issue 19): three daemons in three network namespaces joined on
//! one test network (support::mesh), their peers named by the test DNS server on the hub.
//!
//! - each monitors exactly the other two, and the 3×2 matrix is on `/metrics` with `source`;
//! - a peer dropped from DNS is retired (its series deleted) within the record's TTL, plus the
//!   time of one lookup and one scrape;
//! - a reload that leaves `mesh:` alone keeps the peers' series counting;
//! - with `max_peers: 1` each pings one peer and every peer is pinged by someone; a reload
//!   without `max_peers` adds the other peer and keeps the first one's series, and a reload
//!   without `mesh:` deletes every peer's series.
//!
//! Root only (namespaces); under CI nothing skips (support::require_root).

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::daemon::{Daemon, SESSIONS};
use support::expo::Scrape;
use support::mesh::Fleet;

/// The peers' DNS name.
const NAME: &str = "pingscope-mesh.test";
/// TTL of its records.
const TTL: u32 = 2;

fn config(i: usize, dns: SocketAddr, mesh_extra: &str) -> String {
    format!(
        "defaults:\n  interval: 200ms\n  timeout: 1s\n\
         dns:\n  servers: [\"{dns}\"]\n  refresh: 30s\n\
         mesh:\n  name: node{i}\n  peers: {{dns: {NAME}}}\n{mesh_extra}{SESSIONS}"
    )
}

fn fleet(mesh_extra: &str) -> Option<Fleet> {
    Fleet::start(3, NAME, TTL, |i, dns| config(i, dns, mesh_extra))
}

/// (source, target) of every `pingscope_sent_total` series, and whether each counted probes.
fn matrix(s: &Scrape) -> BTreeSet<(String, String)> {
    s.find("pingscope_sent_total", &[])
        .iter()
        .filter_map(|x| {
            Some((
                x.labels.get("source")?.clone(),
                x.labels.get("target")?.clone(),
            ))
        })
        .collect()
}

fn pairs(source: &str, targets: &[String]) -> BTreeSet<(String, String)> {
    targets
        .iter()
        .map(|t| (source.to_owned(), t.clone()))
        .collect()
}

/// Every pair of `want` has replies (RTT observations), so the peers really answered.
fn answered(s: &Scrape, want: &BTreeSet<(String, String)>) -> bool {
    want.iter().all(|(src, t)| {
        s.get(
            "pingscope_rtt_seconds_count",
            &[("source", src.as_str()), ("target", t.as_str())],
        )
        .is_some_and(|n| n > 0.0)
    })
}

#[test]
fn three_instances_ping_exactly_the_other_two_and_retire_a_peer_that_leaves_dns() {
    let Some(mesh) = fleet("") else { return };
    let addrs = mesh.net.addrs();
    for (i, d) in mesh.daemons.iter().enumerate() {
        let others: Vec<String> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
        let want = pairs(&format!("node{i}"), &others);
        let s = d.scrape_until(Duration::from_secs(15), "the other two, answered", |s| {
            matrix(s) == want && answered(s, &want)
        });
        // Exactly the mesh: the series carry the address as `ip` too, and nothing else runs.
        for x in s.find("pingscope_sent_total", &[]) {
            assert_eq!(x.labels.get("ip"), x.labels.get("target"), "{}", x.series);
        }
    }

    // A reload that leaves mesh: alone keeps the peers' series counting.
    let d0 = &mesh.daemons[0];
    let sent = |d: &Daemon| d.scrape().sum("pingscope_sent_total", &[]);
    let before = sent(d0);
    let (status, body) = d0.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("0 added, 0 changed, 0 removed"), "{body}");
    assert!(sent(d0) >= before, "a reload restarted the peers' counters");

    // node2 leaves DNS: node0 and node1 retire it within the TTL (plus a lookup and a scrape).
    mesh.dns.set_ttl(NAME, &[&addrs[0], &addrs[1]], TTL);
    let left = Instant::now();
    let bound = Duration::from_secs(u64::from(TTL)) + Duration::from_millis(1500);
    for (i, d) in mesh.daemons.iter().take(2).enumerate() {
        let other = addrs[1 - i].clone();
        d.scrape_until(bound, "node2 retired", |s| {
            matrix(s) == pairs(&format!("node{i}"), std::slice::from_ref(&other))
        });
        let s = d.scrape();
        assert!(
            s.samples
                .iter()
                .all(|x| x.labels.get("target") != Some(&addrs[2])),
            "a series of the retired peer is left"
        );
    }
    let took = left.elapsed();
    eprintln!("node2 retired by both after {took:?} (TTL {TTL} s)");
    assert!(took <= bound, "retired after {took:?}");
}

#[test]
fn max_peers_one_pings_one_peer_each_and_every_peer_is_pinged() {
    let Some(mesh) = fleet("  max_peers: 1\n") else {
        return;
    };
    let addrs = mesh.net.addrs();
    let mut pinged = BTreeSet::new();
    for (i, d) in mesh.daemons.iter().enumerate() {
        let s = d.scrape_until(Duration::from_secs(15), "one peer, answered", |s| {
            let m = matrix(s);
            m.len() == 1 && answered(s, &m)
        });
        let m = matrix(&s);
        let (source, target) = m.iter().next().unwrap_or_else(|| panic!("one pair"));
        assert_eq!(source, &format!("node{i}"));
        assert_ne!(target, &addrs[i], "node{i} pings itself");
        assert!(addrs.contains(target), "{target}");
        pinged.insert(target.clone());
    }
    assert_eq!(
        pinged.len(),
        3,
        "every peer is pinged by someone: {pinged:?}"
    );

    // A reload without max_peers: node0 pings both others, the peer it had keeps its series.
    let d0 = &mesh.daemons[0];
    let kept = matrix(&d0.scrape());
    let (_, kept_target) = kept.iter().next().cloned().unwrap_or_default();
    let sent = |d: &Daemon| {
        d.scrape()
            .value("pingscope_sent_total", &[("target", &kept_target)])
    };
    let before = sent(d0);
    mesh.rewrite_config(0, &config(0, mesh.dns.addr(), ""));
    let (status, body) = d0.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    let others: Vec<String> = addrs[1..].to_vec();
    d0.scrape_until(
        Duration::from_secs(10),
        "both peers after the reload",
        |s| matrix(s) == pairs("node0", &others),
    );
    assert!(sent(d0) >= before, "the kept peer's counter restarted");

    // Mesh mode switched off by a reload: every peer's series goes.
    mesh.rewrite_config(
        0,
        &format!("defaults:\n  interval: 200ms\ntargets: []\n{SESSIONS}"),
    );
    let (status, body) = d0.post("/-/reload");
    assert_eq!(status, 200, "{body}");
    d0.scrape_until(
        Duration::from_secs(10),
        "no peer after mesh: is gone",
        |s| s.find("pingscope_sent_total", &[]).is_empty(),
    );
}

/// In-process, no root: static peers beside a configured target. The instance's own entry (by
/// `mesh.name`) is left out, the peers' series carry `source` and the target's do not, and
/// `/api/v1/targets` shows the same labels. (The fake pinger sends nothing.)
#[test]
fn static_peers_run_beside_the_targets_and_only_they_carry_source() {
    let app = support::inproc::InProcess::start(
        "defaults: {interval: 100ms, timeout: 300ms}\n\
         targets:\n  - {name: gw, host: 192.0.2.1}\n\
         mesh:\n  name: a\n  peers: {static: [a, 192.0.2.7, 192.0.2.8]}\n\
         sessions: {database: \"{{DIR}}/s.db\"}\n",
    );
    let c = support::api::client();
    let mut targets = serde_json::Value::Null;
    let ok = support::wait_until(Duration::from_secs(10), || {
        targets = support::api::get_json(&c, &app.url("/api/v1/targets")).1;
        targets["targets"].as_array().is_some_and(|t| t.len() == 3)
    });
    assert!(ok, "{targets}");
    let by_name: Vec<(String, Option<String>)> = targets["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["target"].as_str().unwrap_or_default().to_owned(),
                t["labels"]["source"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        by_name,
        [
            ("192.0.2.7".to_owned(), Some("a".to_owned())),
            ("192.0.2.8".to_owned(), Some("a".to_owned())),
            ("gw".to_owned(), None),
        ]
    );
    let text = c
        .get(app.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Scrape::parse(&text);
    assert_eq!(
        matrix(&s),
        pairs("a", &["192.0.2.7".to_owned(), "192.0.2.8".to_owned()])
    );
    let gw = s.find("pingscope_sent_total", &[("target", "gw")]);
    assert_eq!(gw.len(), 1);
    assert!(!gw[0].labels.contains_key("source"), "{}", gw[0].series);
}

#[test]
fn the_mesh_api_says_when_mesh_mode_is_off() {
    let app = support::inproc::InProcess::start(
        "targets:\n  - {name: gw, host: 192.0.2.1}\nsessions: {database: \"{{DIR}}/s.db\"}\n",
    );
    let c = support::api::client();
    let (status, m) = support::api::get_json(&c, &app.url("/api/v1/mesh"));
    assert_eq!(status, 200);
    assert_eq!(
        m,
        serde_json::json!({"enabled": false, "source": null, "rows": []})
    );
}
