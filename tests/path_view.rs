//! The path views of the API through the test network: a path monitor's hop table names its
//! responders by their PTR records (from the test DNS server; one without a record shows no
//! name), marks the rate-limited hop, and its history shows the scheduled path change with the
//! id `pingscope_path_info` exports; a path session's responder names; the exact 404 and 400.
//!
//! Needs root (namespaces, TUN device). Without root the test skips with a message, unless `CI`
//! is set, where it fails.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::Daemon;
use support::dns::DnsServer;
use support::{TestNet, wait_until, write_config};

/// A history entry's responders at one TTL: (address, name).
type Responders = Vec<(String, Option<String>)>;

/// The (ttl, responder, name) of every hop row of the monitor's one address.
fn rows(v: &Value) -> Vec<(u64, String, String)> {
    v["addresses"][0]["hops"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["ttl"].as_u64().unwrap(),
                        r["responder"].as_str().unwrap_or("").to_owned(),
                        r["name"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn get(d: &Daemon, path: &str) -> (u16, Value) {
    let (status, _, body) = d.get(path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn the_path_view_of_a_monitor_and_the_names_of_a_session() {
    let mut old = support::hops("198.18.10.", 3, 1);
    old[1]["icmp_rate_limit"] = json!(1);
    let path = support::changing_path(old, "6s");
    let Some(net) =
        TestNet::start_and_enter(&json!({"hosts": {"198.18.0.9": {"delay": "1ms", "path": path}}}))
    else {
        return;
    };
    let dns = DnsServer::start();
    for (ip, name) in [
        ("198.18.10.1", "r1.old.test"),
        ("198.18.10.2", "r2.old.test"),
        ("198.18.10.3", "r3.old.test"),
        ("198.18.20.1", "r1.new.test"),
        ("198.18.20.3", "r3.new.test"),
        ("198.18.0.9", "dst.test"),
    ] {
        dns.set_ptr(ip, name);
    }
    let config = write_config(
        net.dir(),
        "serve.yml",
        &format!(
            "dns: {{servers: ['{}']}}\n\
             sessions: {{database: '{{{{DIR}}}}/s.db', min_interval: 10ms}}\n\
             targets:\n\
             \x20 - {{name: p, host: 198.18.0.9, kind: path, interval: 300ms, timeout: 1s, path: {{max_ttl: 8}}}}\n\
             \x20 - {{name: i, host: 198.18.0.9, interval: 1s}}\n",
            dns.addr()
        ),
    );
    let d = Daemon::start(&config, &[]);

    // The old path, named, with the rate-limited hop marked.
    let old = vec![
        (1, "198.18.10.1".to_owned(), "r1.old.test".to_owned()),
        (2, "198.18.10.2".to_owned(), "r2.old.test".to_owned()),
        (3, "198.18.10.3".to_owned(), "r3.old.test".to_owned()),
        (4, "198.18.0.9".to_owned(), "dst.test".to_owned()),
    ];
    let mut v = Value::Null;
    assert!(
        wait_until(Duration::from_secs(5), || {
            v = get(&d, "/api/v1/targets/p/path").1;
            rows(&v) == old && v["addresses"][0]["hops"][1]["rate_limited"] == true
        }),
        "the old path, named: {v:#}\n{}",
        d.log()
    );
    assert_eq!(v["target"], "p");
    assert_eq!(v["host"], "198.18.0.9");
    let a = &v["addresses"][0];
    assert_eq!(a["ip"], "198.18.0.9");
    assert_eq!(a["length"], 4);
    assert_eq!(a["changes"], 0);
    let hops = a["hops"].as_array().unwrap();
    assert!(hops.iter().all(|h| h["current"] == true), "{v:#}");
    for (i, h) in hops.iter().enumerate() {
        assert_eq!(h["rate_limited"], i == 1, "{v:#}");
        assert!(h["sent"].as_u64().unwrap() > 0);
        if i != 1 {
            assert_eq!(h["lost"], 0, "{v:#}");
            assert!(h["rtt_ms"]["avg"].as_f64().unwrap() > 0.0, "{v:#}");
        }
    }
    let first_id = a["path_id"].as_str().unwrap().to_owned();
    let history = a["history"].as_array().unwrap();
    assert_eq!(history[0]["path_id"], first_id.as_str(), "{v:#}");
    assert_eq!(history[0]["changed"], false, "{v:#}");

    // The change: newest first in the history, and the id the metrics export. (A round that
    // straddles the scheduled change shows a mixed path first: two entries, one change.)
    assert!(
        wait_until(Duration::from_secs(10), || {
            v = get(&d, "/api/v1/targets/p/path").1;
            v["addresses"][0]["history"][0]["hops"][0]["responders"][0]["name"] == "r1.new.test"
        }),
        "the change in the history: {v:#}\n{}",
        d.log()
    );
    let a = &v["addresses"][0];
    let history = a["history"].as_array().unwrap();
    let newest = &history[0];
    assert_eq!(newest["changed"], true, "{v:#}");
    let changed = history.iter().filter(|e| e["changed"] == true).count();
    assert!((1..=2).contains(&changed), "{v:#}");
    assert_eq!(a["changes"], 1, "one scheduled change counts once: {v:#}");
    assert_eq!(newest["path_id"], a["path_id"], "{v:#}");
    assert_ne!(newest["path_id"], first_id.as_str());
    assert!(
        history.iter().any(|e| e["path_id"] == first_id.as_str()),
        "the old path stays in the history: {v:#}"
    );
    assert!(history[0]["at"].as_str().unwrap() > history.last().unwrap()["at"].as_str().unwrap());
    let ttls: Vec<(u64, Responders)> = newest["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["ttl"].as_u64().unwrap(),
                h["responders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["ip"].as_str().unwrap().to_owned(),
                            r["name"].as_str().map(str::to_owned),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        ttls,
        vec![
            (1, vec![("198.18.20.1".into(), Some("r1.new.test".into()))]),
            // No PTR record: no name, the page shows the address.
            (2, vec![("198.18.20.2".into(), None)]),
            (3, vec![("198.18.20.3".into(), Some("r3.new.test".into()))]),
            (4, vec![("198.18.0.9".into(), Some("dst.test".into()))]),
        ],
        "{v:#}"
    );
    let s = d.scrape();
    assert_eq!(
        s.label_values("pingscope_path_info", "path_id"),
        vec![a["path_id"].as_str().unwrap().to_owned()]
    );
    // Rows of the old path stay, no longer current; the new ones are.
    let hops = a["hops"].as_array().unwrap();
    let current = |ip: &str| {
        hops.iter()
            .find(|h| h["responder"] == ip)
            .map(|h| h["current"].clone())
    };
    assert_eq!(current("198.18.10.1"), Some(json!(false)), "{v:#}");
    assert_eq!(current("198.18.20.1"), Some(json!(true)), "{v:#}");
    assert!(
        hops.iter()
            .all(|h| h["responder"] != "198.18.20.2" || h.get("name").is_none()),
        "{v:#}"
    );

    // The OpenAPI document describes every field of the answer, and each required one is there.
    let (_, spec) = get(&d, "/api/v1/openapi.json");
    let schemas = &spec["components"]["schemas"];
    let hop_row = &schemas["HopRow"]["allOf"];
    assert_eq!(
        hop_row[0]["$ref"], "#/components/schemas/HopSummary",
        "{hop_row}"
    );
    for (value, parts) in [
        (&v, vec![&schemas["PathMonitorView"]]),
        (a, vec![&schemas["PathAddressView"]]),
        (&a["hops"][0], vec![&schemas["HopSummary"], &hop_row[1]]),
        (&a["history"][0], vec![&schemas["PathChangeView"]]),
        (&a["history"][0]["hops"][0], vec![&schemas["HistoryHop"]]),
        (
            &a["history"][0]["hops"][0]["responders"][0],
            vec![&schemas["Responder"]],
        ),
    ] {
        let known: Vec<&String> = parts
            .iter()
            .flat_map(|p| p["properties"].as_object().unwrap().keys())
            .collect();
        for key in value.as_object().unwrap().keys() {
            assert!(known.contains(&key), "{key} is not in the spec: {parts:?}");
        }
        for p in &parts {
            for req in p["required"].as_array().unwrap() {
                assert!(
                    value.get(req.as_str().unwrap()).is_some(),
                    "{req} missing: {value}"
                );
            }
        }
    }

    // Errors name the monitor.
    let (status, e) = get(&d, "/api/v1/targets/nope/path");
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["error"]["code"], "not_found");
    assert_eq!(e["error"]["message"], "no monitor named \"nope\"");
    let (status, e) = get(&d, "/api/v1/targets/i/path");
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "not_a_path_monitor");
    assert_eq!(
        e["error"]["message"],
        "monitor \"i\" is of kind icmp; only a kind: path monitor has a path view"
    );

    // A path session's responders, by name (the path is the new one now).
    let (status, created) = d.post_json(
        "/api/v1/sessions",
        &json!({"target": "198.18.0.9", "kind": "path", "count": 3, "interval": "100ms", "timeout": "500ms", "max_ttl": 8}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let ended = support::api::wait_ended(d.http(), &d, &id, Duration::from_secs(10));
    assert_eq!(ended["status"], "completed", "{ended}");
    let mut names = Value::Null;
    assert!(
        wait_until(Duration::from_secs(5), || {
            names = get(&d, &format!("/api/v1/sessions/{id}/names")).1;
            names["names"]["198.18.20.3"] == "r3.new.test"
        }),
        "session names: {names:#}"
    );
    assert_eq!(
        names,
        json!({"names": {
            "198.18.20.1": "r1.new.test",
            "198.18.20.3": "r3.new.test",
            "198.18.0.9": "dst.test"
        }})
    );
    let (status, e) = get(
        &d,
        "/api/v1/sessions/01890000-0000-7000-8000-000000000000/names",
    );
    assert_eq!(status, 404, "{e}");
    assert!(dns.queries() > 0);
}
