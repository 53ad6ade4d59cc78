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
                assert!(!t.options.timeout.is_zero(), "zero timeout accepted");
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
    // A UDP path probe's TX timestamp, read whole or cut short (its total length beyond it).
    for total in [data.len(), data.len() + 100, data.len().saturating_sub(1)] {
        let _ = packet::parse_sent_udp(data, total, false);
        let _ = packet::parse_sent_udp(data, total, true);
    }
    let _ = pingscope::engine::udp::request_id(data);
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
        if let Ok(p) = pingscope::http::probe::params(
            &map,
            &profiles,
            config.sessions.min_interval,
            &config.probe_limits,
        ) {
            assert!(p.request.count.is_some_and(|c| c >= 1));
            assert!(!p.request.timeout.is_zero());
            assert!(!p.request.target.trim().is_empty());
        }
    }
}

/// The tree `target_files` is fuzzed over: a folder of this process with a file, a nested file,
/// a symlink loop (`loop/self -> .`, `loop/up -> ../loop`) and a FIFO. Made once per process.
fn target_files_tree() -> Option<&'static Path> {
    static TREE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("pingscope-fuzz-sd-{}", std::process::id()));
        let lp = root.join("t/loop");
        std::fs::create_dir_all(&lp).ok()?;
        let _ = std::os::unix::fs::symlink(".", lp.join("self"));
        let _ = std::os::unix::fs::symlink("../loop", lp.join("up"));
        std::fs::create_dir_all(root.join("t/a/b")).ok()?;
        let _ = std::process::Command::new("mkfifo")
            .arg(root.join("t/fifo.yml"))
            .status();
        Some(root)
    })
    .as_deref()
}

/// The target-file loader on an arbitrary glob pattern (the first line) and file content (the
/// rest), written to every `.yml`/`.json` file of a fixed tree with a symlink loop and a FIFO.
/// Patterns that could leave the tree (absolute, `..`, escapes) are skipped. Whatever the input,
/// the walk ends, every file is read once, and an error names what is wrong.
pub fn target_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, content) = text.split_once('\n').unwrap_or((text, ""));
    if pattern.is_empty()
        || pattern.starts_with('/')
        || pattern.contains("..")
        || pattern.contains('\\')
        || pattern.contains('~')
    {
        return;
    }
    let Some(root) = target_files_tree() else {
        return;
    };
    for file in ["t/a.yml", "t/a/b/c.yml", "t/loop/d.json"] {
        if std::fs::write(root.join(file), content).is_err() {
            return;
        }
    }
    let Ok(quoted) = serde_json::to_string(pattern) else {
        return;
    };
    let config = format!("targets: []\ntarget_files: [{quoted}]\n");
    match parse_str(&config, "fuzz.yml", root) {
        Ok(c) => {
            // Three files at most, whatever the loop: no file is read twice.
            assert!(c.targets_from_files == c.targets.len());
            for t in &c.targets {
                assert!(!t.name.is_empty(), "target without a name accepted");
            }
        }
        Err(e) => {
            assert!(!e.issues.is_empty(), "an error without issues");
            let _ = e.to_string();
        }
    }
}
