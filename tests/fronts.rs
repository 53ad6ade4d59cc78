//! Every front answers the same bad request with the same message: the CLI (`ping`, and
//! `trace` for the path rules; exit 64, the message on stderr), `/probe` (400) and sessions (400), one case per rule of the shared request
//! checks. `/probe` and sessions run in-process over the scripted fake pinger, so no root and no
//! network are needed; the CLI fails before it opens a socket or asks DNS. Targets are loopback
//! literals, so even a front that wrongly accepted a case would ask no DNS server and probe
//! nothing but this machine.
#![allow(clippy::expect_used)]

mod support;

use std::process::Command;

use support::api::{client, get_json, post_json};
use support::inproc::InProcess;

const BIN: &str = env!("CARGO_BIN_EXE_pingscope");

/// One refusal per line, as each front is asked for it: `rule | CLI arguments | /probe query |
/// session body | field | message`. `-`: the front has no way to say it; `<space>` is an
/// argument of one space.
const CASES: &str = r#"
empty target | <space> | target=%20 | {"target":" "} | target | target must not be empty: name the host to probe
count below 1 | -c 0 127.0.0.1 | target=127.0.0.1&count=0 | {"target":"127.0.0.1","count":0} | count | count must be at least 1, got 0
negative count | -c -3 127.0.0.1 | target=127.0.0.1&count=-3 | {"target":"127.0.0.1","count":-3} | count | count must be at least 1, got -3
count not a number | -c x 127.0.0.1 | target=127.0.0.1&count=x | - | count | count "x" is not a whole number
interval syntax | -i 5x 127.0.0.1 | target=127.0.0.1&interval=5x | {"target":"127.0.0.1","interval":"5x"} | interval | interval: invalid duration "5x": unknown unit "x" (use ms, s, m, h, d, w, y)
timeout zero | -W 0s 127.0.0.1 | target=127.0.0.1&timeout=0s | {"target":"127.0.0.1","timeout":"0s"} | timeout | timeout must be greater than 0s
timeout too long | -W 2m 127.0.0.1 | target=127.0.0.1&timeout=2m | {"target":"127.0.0.1","timeout":"2m"} | timeout | timeout 2m is longer than is sane (at most 1m)
size above the IPv4 payload | -s 70000 127.0.0.1 | target=127.0.0.1&size=70000 | {"target":"127.0.0.1","size":70000} | size | size 70000 is larger than the largest ICMP payload over IPv4 (65507 bytes)
size above the IPv6 payload | -6 -s 65528 127.0.0.1 | target=127.0.0.1&family=ip6&size=65528 | {"target":"127.0.0.1","family":"ip6","size":65528} | size | size 65528 is larger than the largest ICMP payload over IPv6 (65527 bytes)
negative size | -s -1 127.0.0.1 | target=127.0.0.1&size=-1 | {"target":"127.0.0.1","size":-1} | size | size must not be negative, got -1
ttl zero | -t 0 127.0.0.1 | target=127.0.0.1&ttl=0 | {"target":"127.0.0.1","ttl":0} | ttl | ttl must be between 1 and 255, got 0
ttl too big | -t 256 127.0.0.1 | target=127.0.0.1&ttl=256 | {"target":"127.0.0.1","ttl":256} | ttl | ttl must be between 1 and 255, got 256
tos too big | -Q 300 127.0.0.1 | target=127.0.0.1&tos=300 | {"target":"127.0.0.1","tos":300} | tos | tos must be between 0 and 255, got 300
unknown family | - | target=127.0.0.1&family=ipx | {"target":"127.0.0.1","family":"ipx"} | family | unknown family "ipx" (use auto, ip4 or ip6)
every address where one is probed | - | target=127.0.0.1&family=all | {"target":"127.0.0.1","family":"all"} | family | family "all" is not possible here: this probes one address (use auto, ip4 or ip6)
unknown kind | - | target=127.0.0.1&kind=ssh | {"target":"127.0.0.1","kind":"ssh"} | kind | unknown kind "ssh" (use icmp, path, tcp, udp)
path max_ttl zero | trace --max-ttl 0 127.0.0.1 | target=127.0.0.1&kind=path&max_ttl=0 | {"target":"127.0.0.1","kind":"path","max_ttl":0} | max_ttl | max_ttl must be between 1 and 255, got 0
path max_ttl too big | trace --max-ttl 256 127.0.0.1 | target=127.0.0.1&kind=path&max_ttl=256 | {"target":"127.0.0.1","kind":"path","max_ttl":256} | max_ttl | max_ttl must be between 1 and 255, got 256
path first_ttl above max_ttl | trace --first-ttl 9 --max-ttl 5 127.0.0.1 | target=127.0.0.1&kind=path&first_ttl=9&max_ttl=5 | {"target":"127.0.0.1","kind":"path","first_ttl":9,"max_ttl":5} | first_ttl | first_ttl 9 is above max_ttl 5
path flows zero | trace --flows 0 127.0.0.1 | target=127.0.0.1&kind=path&flows=0 | {"target":"127.0.0.1","kind":"path","flows":0} | flows | flows must be between 1 and 16, got 0
path flows above the cap | trace --flows 17 127.0.0.1 | target=127.0.0.1&kind=path&flows=17 | {"target":"127.0.0.1","kind":"path","flows":17} | flows | flows must be between 1 and 16, got 17
path unknown protocol | trace --protocol tcp 127.0.0.1 | target=127.0.0.1&kind=path&protocol=tcp | {"target":"127.0.0.1","kind":"path","protocol":"tcp"} | protocol | unknown protocol "tcp" (use icmp or udp)
path pace too short | trace --pace 0s 127.0.0.1 | target=127.0.0.1&kind=path&pace=0s | {"target":"127.0.0.1","kind":"path","pace":"0s"} | pace | pace 0s is below the minimum of 1ms
path pace too long | trace --pace 2s 127.0.0.1 | target=127.0.0.1&kind=path&pace=2s | {"target":"127.0.0.1","kind":"path","pace":"2s"} | pace | pace 2s is above the maximum of 1s
path count below 1 | trace -c 0 127.0.0.1 | - | - | count | count must be at least 1, got 0
port zero | --tcp 0 127.0.0.1 | target=127.0.0.1&kind=tcp&port=0 | {"target":"127.0.0.1","kind":"tcp","port":0} | port | port must be between 1 and 65535, got 0
port above 65535 | --udp 70000 127.0.0.1 | target=127.0.0.1&kind=udp&port=70000 | {"target":"127.0.0.1","kind":"udp","port":70000} | port | port must be between 1 and 65535, got 70000
port on an ICMP target | - | target=127.0.0.1&port=80 | {"target":"127.0.0.1","port":80} | port | port 80 is set but kind is icmp: only tcp and udp probes have a port
TCP target without a port | - | target=127.0.0.1&kind=tcp | {"target":"127.0.0.1","kind":"tcp"} | port | kind tcp needs a port (the TCP port to probe)
UDP target without a port | - | target=127.0.0.1&kind=udp | {"target":"127.0.0.1","kind":"udp"} | port | kind udp needs a port (the UDP port to probe)
unknown UDP mode | --udp 9 --udp-mode x 127.0.0.1 | target=127.0.0.1&kind=udp&port=9&udp_mode=x | {"target":"127.0.0.1","kind":"udp","port":9,"udp_mode":"x"} | udp_mode | unknown udp mode "x" (use closed or echo)
"#;

/// One refusal, as each front is asked for it. `None`: the front has no way to say it.
struct Case<'a> {
    rule: &'a str,
    cli: Option<Vec<&'a str>>,
    query: Option<&'a str>,
    body: Option<&'a str>,
    field: &'a str,
    message: &'a str,
}

fn cases() -> Vec<Case<'static>> {
    let given = |s: &'static str| (s != "-").then_some(s);
    CASES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split(" | ").collect();
            assert_eq!(c.len(), 6, "a case has six columns: {l}");
            Case {
                rule: c[0],
                cli: given(c[1]).map(|a| {
                    a.split_whitespace()
                        .map(|w| if w == "<space>" { " " } else { w })
                        .collect()
                }),
                query: given(c[2]),
                body: given(c[3]),
                field: c[4],
                message: c[5],
            }
        })
        .collect()
}

/// The in-process daemon (the real router and handlers over the fake pinger, no root).
fn daemon() -> InProcess {
    InProcess::start("sessions:\n  database: {{DIR}}/s.db\n  min_interval: 10ms\n")
}

/// The status and the error's code, field and message of a JSON answer.
fn refusal((status, json): (u16, serde_json::Value)) -> (u16, String, String, String) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let e = &json["error"];
    (
        status,
        text(&e["code"]),
        text(&e["field"]),
        text(&e["message"]),
    )
}

fn cli(args: &[&str]) -> (Option<i32>, String) {
    // A deadline (a round count for `trace`), so that a front that wrongly accepted the case
    // would still end by itself.
    let mut cmd = Command::new(BIN);
    match args.split_first() {
        Some((&"trace", rest)) if rest.contains(&"-c") => cmd.arg("trace").args(rest),
        Some((&"trace", rest)) => cmd.args(["trace", "-c", "1"]).args(rest),
        _ => cmd.args(["ping", "-w", "1s"]).args(args),
    };
    let out = cmd.output().expect("running pingscope");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    (out.status.code(), stderr)
}

#[test]
fn every_front_gives_each_rule_the_same_message() {
    let d = daemon();
    let c = client();
    let mut failures = Vec::new();
    for case in cases() {
        let want = case.message;
        if let Some(args) = &case.cli {
            let (code, stderr) = cli(args);
            let expected = format!("pingscope: {want}");
            if code != Some(64) || stderr != expected {
                failures.push(format!(
                    "{}: CLI {args:?}: exit {code:?}, stderr {stderr:?}, want 64 and {expected:?}",
                    case.rule
                ));
            }
        }
        let http = |front: String, answer| {
            let got = refusal(answer);
            let want = (
                400,
                "invalid_parameter".to_owned(),
                case.field.to_owned(),
                want.to_owned(),
            );
            (got != want).then(|| format!("{}: {front}: {got:?}, want {want:?}", case.rule))
        };
        if let Some(query) = case.query {
            let answer = get_json(&c, &d.url(&format!("/probe?{query}")));
            failures.extend(http(format!("/probe?{query}"), answer));
        }
        if let Some(body) = case.body {
            let body: serde_json::Value = serde_json::from_str(body).expect("a JSON case");
            let answer = post_json(&c, &d.url("/api/v1/sessions"), &body);
            failures.extend(http(format!("sessions {body}"), answer));
        }
    }
    assert_eq!(d.fake.sent(), 0, "a refused request sends nothing");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_front_holds_callers_to_its_own_floor() {
    // Same rule, same sentence; the floor is the front's: 1 ms for the CLI, the config's
    // sessions.min_interval (10 ms here) for /probe and sessions.
    let (code, stderr) = cli(&["-i", "0.0005", "127.0.0.1"]);
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(64),
            "pingscope: interval 500us is below the minimum of 1ms"
        )
    );
    let d = daemon();
    let c = client();
    let want = (
        400,
        "invalid_parameter".to_owned(),
        "interval".to_owned(),
        "interval 5ms is below the minimum of 10ms".to_owned(),
    );
    let got = refusal(get_json(&c, &d.url("/probe?target=127.0.0.1&interval=5ms")));
    assert_eq!(got, want);
    let body = serde_json::json!({"target": "127.0.0.1", "interval": "5ms"});
    let got = refusal(post_json(&c, &d.url("/api/v1/sessions"), &body));
    assert_eq!(got, want);
}
