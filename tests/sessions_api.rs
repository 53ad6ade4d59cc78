//! The sessions REST API against the real daemon in the test network: every bad input with its
//! status and message, pagination, the seed's aliases, the OpenAPI document against the router,
//! and 200 sessions at once.
// Tests block their own thread while the daemon works.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestNet;
use support::api::{
    assert_error, base_config, client, get_json, page_ids, post_json, start_session, unknown_id,
    wait_ended,
};
use support::daemon::Daemon;

/// Answers after 5 ms; long sessions against it keep `max_active` slots busy.
const HOST: &str = "198.18.0.20";

fn start_daemon(net: &TestNet, max_active: usize, extra: &str) -> Daemon {
    net.enter();
    let port = support::free_port();
    let config = format!("{}{extra}", base_config(max_active));
    Daemon::start_on(
        &support::write_config(net.dir(), "pingscope.yml", &config),
        port,
        &["--log.level", "warn"],
    )
}

/// [`net`], then [`start_daemon`] in it.
fn start(max_active: usize, extra: &str) -> Option<(TestNet, Daemon)> {
    let net = net()?;
    let d = start_daemon(&net, max_active, extra);
    Some((net, d))
}

fn net() -> Option<TestNet> {
    TestNet::start_if_root(&json!({"default": {"delay": "5ms"}}))
}

#[test]
fn pagination_and_aliases() {
    let Some((_net, d)) = start(
        8,
        "targets:\n  - name: lo-mon\n    host: 127.0.0.1\n    interval: 50ms\n",
    ) else {
        return;
    };
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = start_session(&c, &d, json!({"target": HOST, "count": 1}));
        wait_ended(&c, &d, &id, Duration::from_secs(10));
        ids.push(id);
    }
    // The seed's alias starts a session the same way.
    let (status, rec) = post_json(
        &c,
        &d.url("/start_test"),
        &json!({"target": HOST, "count": 2, "interval": "10ms"}),
    );
    assert_eq!(status, 201, "{rec}");
    let alias_id = rec["id"].as_str().expect("id").to_owned();
    wait_ended(&c, &d, &alias_id, Duration::from_secs(10));
    ids.push(alias_id.clone());
    assert_eq!(
        get_json(&c, &d.url(&format!("/results/{alias_id}"))),
        get_json(&c, &d.url(&format!("/api/v1/sessions/{alias_id}")))
    );
    let bogus = json!({"target": HOST, "bogus": 1});
    let (_, canonical) = post_json(&c, &d.url("/api/v1/sessions"), &bogus);
    let message = canonical["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unknown field `bogus`"), "{canonical}");
    assert_error(
        &post_json(&c, &d.url("/start_test"), &bogus),
        400,
        "invalid_parameter",
        message,
    );
    assert_eq!(
        get_json(&c, &d.url("/results/xyz")),
        get_json(&c, &d.url("/api/v1/sessions/xyz"))
    );
    let (s1, servers) = get_json(&c, &d.url("/servers"));
    let (s2, targets) = get_json(&c, &d.url("/api/v1/targets"));
    assert_eq!((s1, s2), (200, 200));
    assert!(servers.to_string().contains("lo-mon"), "{servers}");
    assert!(targets.to_string().contains("lo-mon"), "{targets}");

    // Newest first, two per page, then the last page without a cursor.
    let (status, p1) = get_json(&c, &d.url("/api/v1/sessions?limit=2"));
    assert_eq!(status, 200, "{p1}");
    assert_eq!(p1["total"], 4);
    assert_eq!(page_ids(&p1), [ids[3].as_str(), ids[2].as_str()]);
    let cursor = p1["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let (_, p2) = get_json(
        &c,
        &d.url(&format!("/api/v1/sessions?limit=2&before={cursor}")),
    );
    assert_eq!(page_ids(&p2), [ids[1].as_str(), ids[0].as_str()]);
    assert!(p2.get("next_cursor").is_none(), "{p2}");
    let (_, all) = get_json(&c, &d.url("/api/v1/sessions"));
    assert_eq!(page_ids(&all).len(), 4);

    // Bad pagination parameters.
    for (query, message) in [
        (
            "limit=0",
            "invalid parameter \"limit\": \"0\" is not in 1..=1000",
        ),
        (
            "limit=1001",
            "invalid parameter \"limit\": \"1001\" is not in 1..=1000",
        ),
        (
            "limit=ten",
            "invalid parameter \"limit\": \"ten\" is not in 1..=1000",
        ),
        (
            "limit=-1",
            "invalid parameter \"limit\": \"-1\" is not in 1..=1000",
        ),
        (
            "before=xyz",
            "invalid parameter \"before\": \"xyz\" is not a session id",
        ),
        ("page=2", "unknown parameter \"page\" (use limit, before)"),
    ] {
        assert_error(
            &get_json(&c, &d.url(&format!("/api/v1/sessions?{query}"))),
            400,
            "invalid_parameter",
            message,
        );
    }

    // WS /live is /api/v1/live: both stream the monitor's samples.
    for path in ["/live?target=lo-mon", "/api/v1/live?target=lo-mon"] {
        let (msgs, end) = first_messages(&d.ws_url(path), 3, Duration::from_secs(10));
        assert_eq!(msgs.len(), 3, "{path}: {end:?}");
        for m in &msgs {
            assert_eq!(m["target"], "lo-mon", "{path}: {m}");
            assert_eq!(m["type"], "reply", "{path}: {m}");
        }
    }
}

/// The first `n` text messages of a WebSocket (bounded), then closes it.
fn first_messages(url: &str, n: usize, within: Duration) -> (Vec<Value>, String) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    support::api::runtime().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        let mut msgs = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while msgs.len() < n {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    msgs.push(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Ok(Some(Ok(_))) => {}
                other => return (msgs, format!("{other:?}")),
            }
        }
        let _ = ws.send(Message::Close(None)).await;
        (msgs, "ok".into())
    })
}

/// `(METHOD, path)` of the `/api/v1` routes registered in `src/http/mod.rs`: the handlers named
/// in `api()`'s `routes!(...)` (with the method and path of each handler's `#[utoipa::path]`),
/// and any `.route("/api/v1...")` added outside that table.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| {
        std::fs::read_to_string(format!("{root}/src/http/{p}")).expect("reading the source")
    };
    let mod_rs = read("mod.rs");
    let start = mod_rs
        .find("pub fn api()")
        .expect("api() in src/http/mod.rs");
    let end = start + mod_rs[start..].find("\n}\n").expect("end of api()");
    let api_fn = &mod_rs[start..end];
    let mut out = BTreeSet::new();
    for chunk in api_fn.split("routes!(").skip(1) {
        let args = &chunk[..chunk.find(')').expect("routes!( closed")];
        for handler in args.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (module, func) = handler.split_once("::").expect("module::handler");
            let file = read(&format!("{module}.rs"));
            let at = file
                .find(&format!("pub async fn {func}("))
                .unwrap_or_else(|| panic!("{handler} not found"));
            let attr_at = file[..at]
                .rfind("#[utoipa::path(")
                .unwrap_or_else(|| panic!("{handler} has no #[utoipa::path]"));
            let attr = &file[attr_at + "#[utoipa::path(".len()..at];
            let method = attr
                .trim_start()
                .split(|c: char| c == ',' || c.is_whitespace())
                .next()
                .expect("a method");
            let path_at =
                attr.find("path = \"").expect("path = in the attribute") + "path = \"".len();
            let path = &attr[path_at..path_at + attr[path_at..].find('"').expect("closing quote")];
            out.insert((method.to_uppercase(), path.to_owned()));
        }
    }
    // Routes added outside the table; whitespace removed so formatting does not matter.
    let compact: String = mod_rs.chars().filter(|c| !c.is_whitespace()).collect();
    for chunk in compact.split(".route(\"").skip(1) {
        let path = &chunk[..chunk.find('"').expect("closing quote")];
        if path.starts_with("/api/v1") {
            // The handlers of this route: up to the next builder call.
            let methods = &chunk[..chunk.find("))").unwrap_or(chunk.len())];
            for m in ["get", "post", "put", "delete", "head"] {
                if methods.contains(&format!(",{m}(")) || methods.contains(&format!(".{m}(")) {
                    out.insert((m.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    out
}

fn routes_in_spec(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            if ["get", "post", "put", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn openapi_matches_router() {
    let Some((_net, d)) = start(4, "") else {
        return;
    };
    let c = client();
    let (status, spec) = get_json(&c, &d.url("/api/v1/openapi.json"));
    assert_eq!(status, 200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{spec}"
    );
    let in_spec = routes_in_spec(&spec);
    let in_source = routes_in_source();
    assert!(
        in_source.len() >= 8,
        "too few routes parsed from the source: {in_source:?}"
    );

    // The document serving the spec is the one route it need not describe.
    let serving_spec = ("GET".to_owned(), "/api/v1/openapi.json".to_owned());
    assert!(
        in_source.contains(&serving_spec),
        "the parser missed a route outside api(): {in_source:?}"
    );
    let missing: Vec<_> = in_source
        .iter()
        .filter(|r| **r != serving_spec && !in_spec.contains(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "routes of the router missing from the spec: {missing:?}"
    );
    let unregistered: Vec<_> = in_spec.difference(&in_source).collect();
    assert!(
        unregistered.is_empty(),
        "routes in the spec not registered in api(): {unregistered:?}"
    );

    // Every documented operation exists on the live daemon: not "no route", not 405.
    let id = unknown_id();
    for (method, path) in &in_spec {
        let url = d.url(&path.replace("{id}", &id));
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = c.request(m, &url);
        if method == "POST" {
            req = req.json(&json!({"target": HOST, "count": 1}));
        }
        let r = req.send().expect("request");
        let code = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert_ne!(code, 405, "{method} {path}: method not allowed");
        assert!(
            !body.contains("no route for"),
            "{method} {path}: {code} {body}"
        );
        assert!(code < 500, "{method} {path}: {code} {body}");
    }
    // And a method the spec does not list is refused on a real path.
    let r = c.put(d.url("/api/v1/sessions")).send().expect("PUT");
    assert_eq!(r.status().as_u16(), 405);
}

#[test]
fn two_hundred_concurrent_sessions() {
    const N: usize = 200;
    const COUNT: u64 = 10;
    let Some(net) = TestNet::start_if_root(&json!({"default": {"delay": "10ms"}})) else {
        return;
    };
    let d = start_daemon(&net, 250, "");
    let c = client();
    let url = d.url("/api/v1/sessions");
    let started = Instant::now();
    // 20 threads (in the namespace: spawned by the entered thread) start 10 sessions each.
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|t| {
                let (c, url) = (c.clone(), url.clone());
                s.spawn(move || {
                    (0..N / 20)
                        .map(|i| {
                            let n = t * (N / 20) + i;
                            let target = format!("198.18.{}.{}", 2 + n / 200, 1 + n % 200);
                            let body = json!({"target": target, "count": COUNT, "interval": "100ms", "timeout": "1s"});
                            let (status, rec) = post_json(&c, &url, &body);
                            assert_eq!(status, 201, "session {n}: {rec}");
                            rec["id"].as_str().expect("id").to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("starter thread"))
            .collect()
    });
    let start_time = started.elapsed();
    assert_eq!(ids.len(), N);
    // Sessions take about 1 s each: most were running together.
    let (_, page) = get_json(&c, &d.url("/api/v1/sessions?limit=1000"));
    let running = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["status"] == "running")
        .count();
    eprintln!("started {N} sessions in {start_time:?}; {running} running right after");
    assert!(
        running >= N / 2 || start_time > Duration::from_secs(1),
        "{running} running"
    );

    for id in &ids {
        let detail = wait_ended(&c, &d, id, Duration::from_secs(30));
        assert_eq!(detail["status"], "completed", "{id}");
        let samples = detail["samples"].as_array().expect("samples");
        assert_eq!(samples.len() as u64, COUNT, "{id}: {detail}");
        assert!(
            samples.iter().all(|s| s["type"] == "reply"),
            "{id}: {detail}"
        );
        assert_eq!(detail["summary"]["sent"].as_u64(), Some(COUNT));
        assert_eq!(detail["summary"]["received"].as_u64(), Some(COUNT));
    }
    let (_, page) = get_json(&c, &d.url("/api/v1/sessions?limit=1000"));
    assert_eq!(page["total"], N as u64);
    assert_eq!(
        page_ids(&page).into_iter().collect::<BTreeSet<_>>(),
        ids.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    assert_eq!(
        net.log().len() as u64,
        N as u64 * COUNT,
        "the responder saw every probe"
    );
}
