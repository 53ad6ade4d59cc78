//! What each fuzz target feeds its input to, and what must hold afterwards.
//!
//! Shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_regressions.rs`, which
//! replays every committed corpus entry and every crash found through the same functions, so a
//! crash fixed once stays fixed under plain `cargo test`. Every function must return normally for
//! every input: a panic is a finding.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use pingscope::config::{Config, format_duration, parse_duration, parse_str};
use pingscope::engine::packet;
use pingscope::session::manager::{StartRequest, validate};

/// The config parser on arbitrary text. Inputs naming `target_files` (or using escapes, which
/// could spell it) are skipped: their globs are real file-system walks, and `/**` would make the
/// fuzzer crawl the machine; the glob code is the `glob` crate's, not ours.
pub fn config(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if src.contains("target_f") || src.contains('\\') {
        return;
    }
    match parse_str(src, "fuzz.yml", Path::new("/nonexistent-pingscope-fuzz")) {
        Ok(config) => {
            // A valid config holds what validation promised.
            for t in &config.targets {
                assert!(!t.name.is_empty(), "target without a name accepted");
                assert!(!t.timeout.is_zero(), "zero timeout accepted");
            }
        }
        Err(e) => {
            // Every error is reported with its text; rendering it must not panic either.
            assert!(!e.issues.is_empty(), "an error without issues");
            let _ = e.to_string();
        }
    }
}

/// The duration parser: never panics, and an accepted duration formats back to itself.
pub fn duration(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(s) {
        let text = format_duration(d);
        match parse_duration(&text) {
            Ok(back) => assert_eq!(back, d, "{s:?} → {d:?} → {text:?} → {back:?}"),
            Err(e) => panic!("{s:?} → {d:?} formats as {text:?}, which does not parse: {e}"),
        }
    }
}

/// Every parser of received ICMP (and IPv4) packets, on arbitrary bytes.
pub fn icmp(data: &[u8]) {
    fn inspect(m: &packet::Icmp<'_>, v6: bool) {
        match m {
            packet::Icmp::EchoReply(e) | packet::Icmp::EchoRequest(e) => {
                let _ = packet::read_stamp(e.payload);
            }
            packet::Icmp::Error(q) => {
                let _ = packet::classify_error(v6, q.icmp_type, q.icmp_code);
            }
            packet::Icmp::Other { .. } => {}
        }
    }
    if let Ok(m) = packet::parse_icmpv4(data) {
        inspect(&m, false);
    }
    if let Ok((_, m)) = packet::parse_ipv4_packet(data) {
        inspect(&m, false);
    }
    if let Ok(m) = packet::parse_icmpv6(data) {
        inspect(&m, true);
    }
    let _ = packet::parse_quoted_echo(data, false);
    let _ = packet::parse_quoted_echo(data, true);
    let _ = packet::parse_sent_request(data, false);
    let _ = packet::parse_sent_request(data, true);
    let _ = packet::read_stamp(data);
    let _ = packet::checksum(data);
}

/// The API's inputs: the first byte picks the session start body (JSON, as the handler
/// deserializes it, then validated against the default config) or the `/probe` query string.
pub fn api_json(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let config = Config::embedded_default();
    if which % 2 == 0 {
        if let Ok(req) = serde_json::from_slice::<StartRequest>(rest)
            && let Ok(p) = validate(&req, &config)
        {
            assert!(p.interval >= config.sessions.min_interval);
            assert!(!p.timeout.is_zero() && p.timeout <= Duration::from_secs(60));
            assert!(p.count.is_some() || p.duration.is_some());
        }
    } else {
        let Ok(q) = std::str::from_utf8(rest) else {
            return;
        };
        // A plain split: percent-decoding belongs to the HTTP layer's (tested) deserializer.
        let map: HashMap<String, String> = q
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let profiles: BTreeMap<_, _> = config.probe_profiles.clone();
        if let Ok(p) = pingscope::http::probe::params(&map, &profiles, config.sessions.min_interval)
        {
            assert!(p.request.count.is_some_and(|c| c >= 1));
            assert!(!p.request.timeout.is_zero());
            assert!(!p.request.target.trim().is_empty());
        }
    }
}
