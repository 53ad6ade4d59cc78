//! The API's error paths in-process, without root: `App` with the scripted fake pinger behind
//! the daemon's router and layers on 127.0.0.1:0 (`support::inproc`). Every bad body, unknown
//! id, limit and access refusal answers with its status, code and exact message, and none of
//! them sends a probe. The root tests keep what needs real sockets.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::Duration;

use pingscope::engine::fake::Step;
use serde_json::{Value, json};
use support::api::{
    DENIED_HOST, TEST_RANGES, assert_error, assert_error_has, base_config, client, delete,
    get_json, post_json, probe_config, probe_with, send_raw, start_session, stop_session,
    unknown_id, wait_ended,
};
use support::dns::DnsServer;
use support::inproc::InProcess;

/// A session target; the fake answers it after 5 ms.
const HOST: &str = "198.18.0.20";

/// `GET /probe` with these query pairs.
fn probe(c: &reqwest::blocking::Client, d: &InProcess, q: &[(&str, &str)]) -> support::api::Answer {
    probe_with(c, d, q, &[])
}

/// Stopping session `id` again is a conflict that names its final `status`.
fn assert_stop_refused(c: &reqwest::blocking::Client, d: &InProcess, id: &str, status: &str) {
    assert_error(
        &stop_session(c, d, id),
        409,
        "not_running",
        &format!("session {id} is not running (status {status})"),
    );
}

#[test]
fn sessions_bad_input_has_status_and_message() {
    let d = InProcess::start(&base_config(2));
    d.fake.script(
        HOST.parse().expect("a literal"),
        vec![Step::Reply {
            rtt: Duration::from_millis(5),
            ttl: 64,
        }],
    );
    let c = client();
    let url = d.url("/api/v1/sessions");
    let post = |body: Value| post_json(&c, &url, &body);

    // Refused with 400 invalid_parameter, and the exact message.
    for (body, message) in [
        (
            json!({"target": HOST, "duration": "11m", "interval": "1s"}),
            "the probes would run 11m, above sessions.max_duration 10m (lower \"count\" or \"duration\", or raise \"interval\")",
        ),
        (
            json!({"target": HOST, "count": 700, "interval": "1s"}),
            "the probes would run 11m41s, above sessions.max_duration 10m (lower \"count\" or \"duration\", or raise \"interval\")",
        ),
        (
            json!({"target": HOST, "interval": "5ms"}),
            "interval 5ms is below the minimum of 10ms",
        ),
        (
            json!({"target": HOST, "interval": "soon"}),
            "interval: invalid duration \"soon\": expected a number before \"soon\"",
        ),
        (
            json!({"target": "  "}),
            "target must not be empty: name the host to probe",
        ),
        (
            json!({"target": HOST, "count": 0}),
            "count must be at least 1, got 0",
        ),
        (
            json!({"target": HOST, "timeout": "2m"}),
            "timeout 2m is longer than is sane (at most 1m)",
        ),
        (
            json!({"target": HOST, "family": "all"}),
            "family \"all\" is not possible here: this probes one address (use auto, ip4 or ip6)",
        ),
        (
            json!({"target": HOST, "size": 70000}),
            "size 70000 is larger than the largest ICMP payload over IPv4 (65507 bytes)",
        ),
    ] {
        assert_error(&post(body), 400, "invalid_parameter", message);
    }
    assert_error(
        &post(json!({"target": DENIED_HOST})),
        403,
        "forbidden",
        &format!("target {DENIED_HOST} ({DENIED_HOST}) denied by access.deny {DENIED_HOST}/32"),
    );
    // Not in access.allow (the config allows 2001:db8::/32 but not this other test prefix).
    assert_error(
        &post(json!({"target": "2001:db9::5"})),
        403,
        "forbidden",
        "target 2001:db9::5 (2001:db9::5) not in access.allow",
    );
    // serde's own messages, with the path of the field at fault.
    for (body, fragments) in [
        (
            json!({"target": HOST, "colour": "red"}),
            ["unknown field `colour`"].as_slice(),
        ),
        (
            json!({"target": HOST, "count": "ten"}),
            ["count", "invalid type: string \"ten\", expected i64"].as_slice(),
        ),
        (json!({"count": 3}), ["missing field `target`"].as_slice()),
    ] {
        assert_error_has(&post(body), 400, "invalid_parameter", fragments);
    }
    assert_error_has(
        &send_raw(
            &c,
            &url,
            Some("application/json"),
            b"{\"target\": ".to_vec(),
        ),
        400,
        "invalid_parameter",
        &["invalid JSON body", "EOF"],
    );
    assert_error(
        &send_raw(&c, &url, None, br#"{"target":"198.18.0.20"}"#.to_vec()),
        415,
        "unsupported_media_type",
        "the body must be JSON with Content-Type: application/json",
    );
    assert_error(
        &send_raw(
            &c,
            &url,
            Some("text/plain"),
            br#"{"target":"198.18.0.20"}"#.to_vec(),
        ),
        415,
        "unsupported_media_type",
        "the body must be JSON with Content-Type: application/json",
    );
    let big = format!(r#"{{"target":"{HOST}","pad":"{}"}}"#, "x".repeat(70 * 1024));
    assert_error(
        &send_raw(&c, &url, Some("application/json"), big.into_bytes()),
        413,
        "body_too_large",
        "request body larger than 65536 bytes",
    );

    // Ids.
    assert_error(
        &get_json(&c, &d.url("/api/v1/sessions/xyz")),
        400,
        "invalid_parameter",
        "invalid session id \"xyz\": expected a UUIDv7 as returned at start",
    );
    assert_error(
        &get_json(
            &c,
            &d.url("/api/v1/sessions/0b6f6a8e-3c1d-4f5e-9a2b-1c2d3e4f5a6b"),
        ),
        400,
        "invalid_parameter",
        "invalid session id \"0b6f6a8e-3c1d-4f5e-9a2b-1c2d3e4f5a6b\": expected a UUIDv7 as returned at start",
    );
    let unknown = unknown_id();
    let msg = format!("no session {unknown}");
    assert_error(
        &get_json(&c, &d.url(&format!("/api/v1/sessions/{unknown}"))),
        404,
        "not_found",
        &msg,
    );
    let r = delete(&c, &d.url(&format!("/api/v1/sessions/{unknown}")));
    assert_error(&r, 404, "not_found", &msg);
    assert_error(&stop_session(&c, &d, &unknown), 404, "not_found", &msg);

    // max_active (2): two long sessions fill it; a third is refused.
    let long = json!({"target": HOST, "count": 500, "interval": "100ms"});
    let a = start_session(&c, &d, long.clone());
    let b = start_session(&c, &d, long.clone());
    assert_error(
        &post(long),
        429,
        "too_many_sessions",
        "2 sessions are running, the most sessions.max_active allows; retry when one ends",
    );
    // A denied target is refused for what it is even with every slot taken: 403, not 429.
    assert_error(
        &post(json!({"target": DENIED_HOST})),
        403,
        "forbidden",
        &format!("target {DENIED_HOST} ({DENIED_HOST}) denied by access.deny {DENIED_HOST}/32"),
    );
    // A running session cannot be deleted.
    let r = delete(&c, &d.url(&format!("/api/v1/sessions/{a}")));
    assert_error(
        &r,
        409,
        "session_running",
        &format!("session {a} is running; stop it first"),
    );
    // Stop both; stopping again is a conflict; then delete works.
    for id in [&a, &b] {
        let (s, rec) = stop_session(&c, &d, id);
        assert_eq!(s, 202, "{rec}");
        let ended = wait_ended(&c, &d, id, Duration::from_secs(10));
        assert_eq!(ended["status"], "stopped");
    }
    assert_stop_refused(&c, &d, &a, "stopped");
    let r = delete(&c, &d.url(&format!("/api/v1/sessions/{a}")));
    assert_eq!(r.0, 204);
    assert_eq!(
        get_json(&c, &d.url(&format!("/api/v1/sessions/{a}"))).0,
        404
    );
    // Slots are free again.
    let short = start_session(
        &c,
        &d,
        json!({"target": HOST, "count": 2, "interval": "10ms"}),
    );
    let done = wait_ended(&c, &d, &short, Duration::from_secs(10));
    assert_eq!(done["status"], "completed");
    assert_stop_refused(&c, &d, &short, "completed");

    // Unknown paths answer in the same shape.
    assert_error(
        &get_json(&c, &d.url("/api/v1/nothing")),
        404,
        "not_found",
        "no route for /api/v1/nothing",
    );
}

#[test]
fn probe_bad_requests_are_400_with_the_reason() {
    let c = client();
    let d = InProcess::start(&probe_config(TEST_RANGES, None));
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "target must not be empty: name the host to probe"),
        (
            &[("target", "")],
            "target must not be empty: name the host to probe",
        ),
        (
            &[("target", "  ")],
            "target must not be empty: name the host to probe",
        ),
        (
            &[("target", "198.18.0.9"), ("module", "nope")],
            "unknown module \"nope\" (configured: default, three)",
        ),
        (
            &[("target", "198.18.0.9"), ("count", "0")],
            "count must be at least 1, got 0",
        ),
        (
            &[("target", "198.18.0.9"), ("count", "1001")],
            "count must be at most 1000, got 1001",
        ),
        (
            &[("target", "198.18.0.9"), ("count", "x")],
            "count \"x\" is not a whole number",
        ),
        (
            &[("target", "198.18.0.9"), ("count", "-1")],
            "count must be at least 1, got -1",
        ),
        (
            &[("target", "198.18.0.9"), ("interval", "1ms")],
            "interval 1ms is below the minimum of 10ms",
        ),
        (
            &[("target", "198.18.0.9"), ("timeout", "2m")],
            "timeout 2m is longer than is sane (at most 1m)",
        ),
        (
            &[("target", "198.18.0.9"), ("size", "70000")],
            "size 70000 is larger than the largest ICMP payload over IPv4 (65507 bytes)",
        ),
        (
            &[("target", "198.18.0.9"), ("size", "big")],
            "size \"big\" is not a whole number",
        ),
        (
            &[("target", "198.18.0.9"), ("family", "ipx")],
            "unknown family \"ipx\" (use auto, ip4 or ip6)",
        ),
        (
            &[("target", "198.18.0.9"), ("debug", "maybe")],
            "debug \"maybe\" is not a boolean (use true or false)",
        ),
    ];
    for (q, want) in cases {
        let a = probe(&c, &d, q);
        assert_eq!(a.status, 400, "{q:?}: {}", a.body);
        assert_eq!(a.error_code(), "invalid_parameter", "{q:?}");
        assert_eq!(a.error_message(), *want, "{q:?}");
    }
    for (key, value) in [("interval", "fast"), ("timeout", "5x")] {
        let a = probe(&c, &d, &[("target", "198.18.0.9"), (key, value)]);
        assert_eq!(a.status, 400, "{key}={value}: {}", a.body);
        let want = format!("{key}: invalid duration \"{value}\": ");
        assert!(
            a.error_message().starts_with(&want),
            "{key}={value}: {}",
            a.body
        );
    }
    assert_eq!(d.fake.sent(), 0, "a refused request sends nothing");
}

#[test]
fn probe_access_rules_hold_for_every_spelling_and_for_names() {
    let dns = DnsServer::with(&[
        ("loopback.test", &["127.0.0.5"]),
        ("mapped.test", &["::ffff:127.0.0.6"]),
        ("bench.test", &["198.18.0.44"]),
        ("outside.test", &["198.19.0.44"]),
    ]);
    let access = r#"  allow: [198.18.0.0/16, 127.0.0.0/8, "::/0"]
  deny: [127.0.0.0/8, "2001:db8:dead::/48"]"#;
    let c = client();
    let d = InProcess::start(&probe_config(access, Some(dns.addr())));
    let rule = "denied by access.deny 127.0.0.0/8";
    for target in [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "017700000001",
        "0177.0.0.01",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "::ffff:7f00:1",
        "0x7f.1",
        "0177.1",
        "127.000.000.001",
        "0X7F.0x0.0.0x1",
        "[::FFFF:127.0.0.1]",
        "::FFFF:7F00:1",
        "0:0:0:0:0:ffff:7f00:1",
        " 127.1 ",
        "loopback.test",
        "LOOPBACK.test",
        "loopback.test.",
    ] {
        let a = probe(&c, &d, &[("target", target), ("count", "1")]);
        assert_eq!(a.status, 403, "{target}: {}", a.body);
        assert_eq!(a.error_code(), "forbidden", "{target}");
        let msg = a.error_message();
        assert!(
            msg.contains(rule) && msg.contains(target),
            "{target}: {msg}"
        );
    }
    // The names went through the test DNS server, not around it (the second spelling of the
    // name may come from the resolver's cache).
    assert!(dns.queries() >= 1, "DNS queries: {}", dns.queries());
    // A name with only an AAAA record, IPv4-mapped into the range.
    let a = probe(&c, &d, &[("target", "mapped.test"), ("count", "1")]);
    assert_eq!(a.status, 403, "mapped.test: {}", a.body);
    assert!(a.error_message().contains(rule), "{}", a.body);
    // Asked for IPv6 only, the mapped address counts as IPv4: no IPv6 address, nothing probed.
    let a = probe(
        &c,
        &d,
        &[("target", "mapped.test"), ("family", "ip6"), ("count", "1")],
    );
    assert!(
        a.status == 403 || (a.status == 200 && a.metric("probe_packets_sent") == Some(0.0)),
        "{}",
        a.body
    );
    let a = probe(&c, &d, &[("target", "2001:db8:dead::5"), ("count", "1")]);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.error_message()
            .contains("denied by access.deny 2001:db8:dead::/48"),
        "{}",
        a.body
    );
    // Outside every allow rule.
    for target in ["198.19.0.44", "outside.test"] {
        let a = probe(&c, &d, &[("target", target), ("count", "1")]);
        assert_eq!(a.status, 403, "{target}: {}", a.body);
        assert!(
            a.error_message().ends_with("not in access.allow"),
            "{target}: {}",
            a.body
        );
    }
    assert_eq!(d.fake.sent(), 0, "nothing denied reached the network");
}

#[test]
fn probe_the_unspecified_address_is_refused_even_when_everything_is_allowed() {
    let access = r#"  allow: [0.0.0.0/0, "::/0"]
  deny: [127.0.0.0/8, "::1/128"]"#;
    let c = client();
    let d = InProcess::start(&probe_config(access, None));
    // The kernel delivers a ping to 0.0.0.0 or :: to this host itself, the same as loopback,
    // so no allow rule may let it through.
    for target in ["0", "0.0.0.0", "0x0", "::", "[::]", "::ffff:0.0.0.0"] {
        let a = probe(
            &c,
            &d,
            &[("target", target), ("count", "1"), ("timeout", "200ms")],
        );
        assert_eq!(a.status, 403, "{target}: {}", a.body);
        assert_eq!(a.error_code(), "forbidden", "{target}");
        assert!(
            a.error_message().contains("unspecified address"),
            "{target}: {}",
            a.body
        );
    }
}

/// `GET path` asking for `accept_encoding`: the answer's `Content-Encoding` and its body,
/// gunzipped when it says gzip.
fn get_encoded(d: &InProcess, path: &str, accept_encoding: &str) -> (Option<String>, String) {
    use std::io::Read;
    let resp = client()
        .get(d.url(path))
        .header("Accept-Encoding", accept_encoding)
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status(), 200, "GET {path}");
    let vary = resp.headers().get("vary").and_then(|v| v.to_str().ok());
    assert_eq!(vary, Some("Accept-Encoding"), "GET {path}");
    let encoding = resp
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let raw = resp.bytes().expect("a body").to_vec();
    let mut body = String::new();
    if encoding.as_deref() == Some("gzip") {
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_string(&mut body)
            .unwrap_or_else(|e| panic!("GET {path}: the gzip body does not decode: {e}"));
    } else {
        body = String::from_utf8(raw).expect("a UTF-8 body");
    }
    (encoding, body)
}

/// The `# TYPE` lines of an exposition: what families it has, whatever their values.
fn families(body: &str) -> std::collections::BTreeSet<&str> {
    body.lines().filter(|l| l.starts_with("# TYPE ")).collect()
}

/// Prometheus asks for gzip on every scrape: `/metrics` and `/probe` answer gzip then, the same
/// exposition as identity, and identity when gzip is not accepted.
#[test]
fn scrapes_are_gzip_compressed_when_the_client_accepts_it() {
    let d = InProcess::start(&format!(
        "{}targets:\n  - {{name: a, host: {HOST}, interval: 50ms}}\n",
        base_config(1)
    ));
    d.fake.script(
        HOST.parse().unwrap(),
        vec![Step::Reply {
            rtt: Duration::from_millis(5),
            ttl: 60,
        }],
    );
    // Some families (the window gauges) appear with the first reply: compare after it.
    let answered = |body: &str| {
        body.lines()
            .any(|l| l.starts_with("pingscope_rtt_seconds_count{") && !l.ends_with(" 0"))
    };
    let mut plain = String::new();
    for _ in 0..100 {
        let (encoding, body) = get_encoded(&d, "/metrics", "identity");
        assert_eq!(encoding, None);
        plain = body;
        if answered(&plain) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answered(&plain), "no reply recorded in 2 s:\n{plain}");
    for accept in ["gzip", "deflate, gzip;q=1.0, *;q=0.5", "*"] {
        let (encoding, body) = get_encoded(&d, "/metrics", accept);
        assert_eq!(
            encoding.as_deref(),
            Some("gzip"),
            "Accept-Encoding: {accept}"
        );
        // Families only ever appear (the RFC 3550 jitter with the second reply): the gzip body
        // has every family of the plain one before it, and none the plain one after lacks.
        let (_, after) = get_encoded(&d, "/metrics", "identity");
        let (before, gz, after) = (families(&plain), families(&body), families(&after));
        assert!(
            before.is_subset(&gz) && gz.is_subset(&after),
            "Accept-Encoding: {accept}: {before:?} / {gz:?} / {after:?}"
        );
    }
    let (encoding, _) = get_encoded(&d, "/metrics", "gzip;q=0, identity");
    assert_eq!(encoding, None, "gzip refused with q=0");

    let probe = format!("/probe?target={HOST}&count=1&timeout=300ms");
    let (encoding, body) = get_encoded(&d, &probe, "gzip");
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert!(body.contains("probe_success 1"), "{body}");
    let (encoding, body) = get_encoded(&d, &probe, "br");
    assert_eq!(encoding, None);
    assert!(body.contains("probe_success 1"), "{body}");
}

#[test]
fn path_views_refuse_unknown_and_non_path_monitors_by_name() {
    // No lookup leaves the process: names go to a closed loopback port.
    let config = format!(
        "{}dns: {{servers: ['127.0.0.1:1']}}\n\
         targets:\n\
         \x20 - {{name: ping, host: {HOST}}}\n\
         \x20 - {{name: trace, host: 198.18.0.21, kind: path, interval: 1s, path: {{max_ttl: 3}}}}\n",
        base_config(2)
    );
    let d = InProcess::start(&config);
    let c = client();
    let get = |path: &str| get_json(&c, &d.url(path));
    assert_error(
        &get("/api/v1/targets/nope/path"),
        404,
        "not_found",
        "no monitor named \"nope\"",
    );
    assert_error(
        &get("/api/v1/targets/ping/path"),
        400,
        "not_a_path_monitor",
        "monitor \"ping\" is of kind icmp; only a kind: path monitor has a path view",
    );
    // The monitor's address shows once its task runs.
    let mut answer = (0, Value::Null);
    assert!(
        support::wait_until(Duration::from_secs(5), || {
            answer = get("/api/v1/targets/trace/path");
            answer.1["addresses"][0]["ip"].is_string()
        }),
        "{answer:?}"
    );
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["target"], "trace");
    assert_eq!(body["host"], "198.18.0.21");
    assert_eq!(body["addresses"][0]["ip"], "198.18.0.21", "{body}");
    assert!(body["addresses"][0]["hops"].is_array(), "{body}");
    assert!(body["addresses"][0]["history"].is_array(), "{body}");

    let id = unknown_id();
    assert_error(
        &get(&format!("/api/v1/sessions/{id}/names")),
        404,
        "not_found",
        &format!("no session {id}"),
    );
    assert_error(
        &get("/api/v1/sessions/x/names"),
        400,
        "invalid_parameter",
        "invalid session id \"x\": expected a UUIDv7 as returned at start",
    );
}
