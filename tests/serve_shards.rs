//! `--shard I/N` end to end: three daemons on one 1,000-target list (loopback addresses at a
//! long interval, inside a test namespace) cover it with no overlap and no gap, and a
//! restarted shard keeps the same targets. `--shard auto` does the same with the shard taken
//! from the hostnames pingscope-0..2 of a 3-replica StatefulSet.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::daemon::Daemon;
use support::daemon::SESSIONS;
use support::write_config;
use support::{TestNet, wait_until};

const TARGETS: usize = 1_000;

fn target_list() -> String {
    format!(
        "defaults: {{interval: 10s, timeout: 1s}}\n{}{SESSIONS}",
        support::loopback_targets(TARGETS, 0, 4)
    )
}

/// (target, ip) pairs the daemon monitors, from `/api/v1/targets`.
fn monitored(d: &Daemon) -> BTreeSet<(String, String)> {
    d.targets()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_string(),
                t["ip"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn three_shards_cover_the_list_without_overlap_or_gap() {
    let Some(net) = TestNet::start_and_enter(&json!({})) else {
        return;
    };
    let path = write_config(net.dir(), "targets.yml", &target_list());
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| Daemon::start(&path, &["--shard", &format!("{i}/3")]))
        .collect();
    let sets = assert_cover_without_overlap_or_gap(&daemons);

    // Stable across restarts: shard 1 again keeps exactly the same targets.
    drop(daemons.remove(1));
    let again = Daemon::start(&path, &["--shard", "1/3"]);
    assert_eq!(
        monitored_once(&again, sets[1].len()),
        sets[1],
        "shard 1 changed across a restart"
    );
}

#[test]
fn statefulset_pods_with_shard_auto_cover_the_list_as_explicit_shards_do() {
    let Some(net) = TestNet::start_and_enter(&json!({})) else {
        return;
    };
    let path = write_config(net.dir(), "targets.yml", &target_list());
    // The count once from the flag, twice from the environment, as the manifest sets it.
    let daemons: Vec<Daemon> = (0..3)
        .map(|i| {
            let host = format!("pingscope-{i}");
            if i == 0 {
                Daemon::start_with_env(
                    &path,
                    &["--shard", "auto", "--shard.count", "3"],
                    &[("HOSTNAME", &host)],
                )
            } else {
                Daemon::start_with_env(
                    &path,
                    &["--shard", "auto"],
                    &[("HOSTNAME", &host), ("PINGSCOPE_SHARD_COUNT", "3")],
                )
            }
        })
        .collect();
    let sets = assert_cover_without_overlap_or_gap(&daemons);
    // Pod N is shard N/3: the same split as the explicit flags.
    let shard1 = Daemon::start(&path, &["--shard", "1/3"]);
    assert_eq!(
        monitored_once(&shard1, sets[1].len()),
        sets[1],
        "pingscope-1 is not shard 1/3"
    );
}

/// What `d` monitors once it lists at least `n` pairs (waiting at most 20 s for that).
fn monitored_once(d: &Daemon, n: usize) -> BTreeSet<(String, String)> {
    let mut now = BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            now = monitored(d);
            now.len() >= n
        }),
        "{} of {n} targets after 20 s",
        now.len()
    );
    now
}

/// The daemons' target sets, once they list 1,000 targets between them: no target in two,
/// none in no shard, each shard far from empty or whole, and `/metrics` agrees.
fn assert_cover_without_overlap_or_gap(daemons: &[Daemon]) -> Vec<BTreeSet<(String, String)>> {
    let mut sets: Vec<BTreeSet<(String, String)>> = Vec::new();
    let complete = wait_until(Duration::from_secs(20), || {
        sets = daemons.iter().map(monitored).collect();
        sets.iter().map(BTreeSet::len).sum::<usize>() >= TARGETS
    });
    assert!(
        complete,
        "shards list only {:?} targets",
        sets.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );

    let expected: BTreeSet<(String, String)> = (0..TARGETS)
        .map(|i| {
            (
                format!("t{i:04}"),
                format!("127.0.{}.{}", i / 250, i % 250 + 1),
            )
        })
        .collect();
    let mut union = BTreeSet::new();
    for (i, set) in sets.iter().enumerate() {
        for item in set {
            assert!(
                union.insert(item.clone()),
                "{item:?} is in two shards (second: {i})"
            );
        }
        // FNV-1a spreads 1,000 names evenly enough: each shard far from empty or whole.
        assert!(
            (200..=470).contains(&set.len()),
            "shard {i} holds {} targets",
            set.len()
        );
    }
    let gap: Vec<_> = expected.difference(&union).collect();
    assert!(gap.is_empty(), "targets in no shard: {gap:?}");
    assert_eq!(union, expected);

    // The metrics agree with the API: one target_info series per monitored target.
    for (d, set) in daemons.iter().zip(&sets) {
        let s = d.scrape();
        let info: BTreeSet<(String, String)> = s
            .find("pingscope_target_info", &[])
            .iter()
            .map(|x| (x.labels["target"].clone(), x.labels["ip"].clone()))
            .collect();
        assert_eq!(&info, set);
    }
    sets
}
