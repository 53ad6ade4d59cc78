//! `--web.config.file`: TLS (versions, client certificates, rotation), basic auth (401, timing of
//! unknown users, CVE-2022-46146), response headers, and a file that turns invalid at runtime.
//! Everything runs on 127.0.0.1 with a PKI made by the test.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pingscope::http::serve::ServeOptions;
use pingscope::http::webconfig::{RECHECK, WebConfig};
use support::daemon::Daemon;
use support::web::*;

/// Long enough for the server to notice a changed file.
const NOTICE: Duration = Duration::from_millis(1300);

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("web.yml");
    write_atomic(&path, text);
    path
}

async fn start_with(path: &Path, health_without_auth: bool) -> Server {
    let web = WebConfig::open(path).expect("valid web config");
    start(ServeOptions {
        web_config: Some(web),
        health_without_auth,
        ..ServeOptions::default()
    })
    .await
}

/// Writes a CA, a server certificate and key into `dir`; returns the CA.
fn tls_files(dir: &Path) -> Ca {
    let ca = Ca::new("pingscope test CA");
    let (cert, key) = ca.server("server one");
    write_atomic(&dir.join("server.crt"), &cert);
    write_atomic(&dir.join("server.key"), &key);
    write_atomic(&dir.join("ca.crt"), &ca.pem());
    ca
}

/// A web config serving the certificate of [`tls_files`], then `extra` lines (each ending in a
/// newline: indented by two spaces they belong to `tls_server_config`, unindented they are
/// top-level keys).
fn tls_config(dir: &Path, extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}"),
    )
}

/// A server on TLS with the files of [`tls_files`] and the config of [`tls_config`], in a
/// folder of its own that lives as long as it.
struct TlsSite {
    server: Server,
    ca: Ca,
    dir: tempfile::TempDir,
}

impl TlsSite {
    async fn start(extra: &str) -> TlsSite {
        let dir = tempfile::tempdir().unwrap();
        let ca = tls_files(dir.path());
        let server = start_with(&tls_config(dir.path(), extra), false).await;
        TlsSite { server, ca, dir }
    }

    /// `GET /` as a client that trusts the site's CA, shows `identity` and speaks `versions`.
    async fn get_root(
        &self,
        identity: Option<&(String, String)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<(Reply, Vec<u8>)> {
        let client = tls_client(&self.ca.pem(), identity, versions);
        get_tls(&client, self.server.addr, "/").await
    }
}

/// The status of `GET /` with Basic credentials `user:password`.
async fn status_as(addr: std::net::SocketAddr, user: &str, password: &str) -> u16 {
    get_plain(addr, "/", Some((user, password))).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_works_and_plain_http_to_the_tls_port_does_not() {
    let site = TlsSite::start("").await;
    let (reply, _) = site
        .get_root(None, ALL_VERSIONS)
        .await
        .expect("https exchange");
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello\n"));

    let stream = tokio::net::TcpStream::connect(site.server.addr)
        .await
        .unwrap();
    let plain = exchange(stream, &get_request("/", None)).await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate_is_enforced() {
    let site = TlsSite::start(
        "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    .await;
    let anonymous = site.get_root(None, ALL_VERSIONS).await;
    assert!(
        anonymous.is_err(),
        "served without a client certificate: {anonymous:?}"
    );

    let stranger_ca = Ca::new("someone else");
    let stranger = stranger_ca.client("stranger");
    let foreign = site.get_root(Some(&stranger), ALL_VERSIONS).await;
    assert!(
        foreign.is_err(),
        "served a certificate from another CA: {foreign:?}"
    );

    let client = site.ca.client("prometheus");
    let (reply, _) = site
        .get_root(Some(&client), ALL_VERSIONS)
        .await
        .expect("client with a certificate");
    assert_eq!(reply.status, 200);
}

/// Every client auth type against three clients: none, a certificate from the trusted CA, and
/// one from a CA nobody trusts. `true` means served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_auth_type_behaves_as_the_toolkit_documents() {
    let cases = [
        ("NoClientCert", false, [true, true, true]),
        ("RequestClientCert", false, [true, true, true]),
        ("RequireAnyClientCert", false, [false, true, true]),
        ("VerifyClientCertIfGiven", true, [true, true, false]),
        ("RequireAndVerifyClientCert", true, [false, true, false]),
    ];
    for (auth, with_ca, expected) in cases {
        let ca_line = if with_ca {
            "  client_ca_file: ca.crt\n"
        } else {
            ""
        };
        let site = TlsSite::start(&format!("{ca_line}  client_auth_type: {auth}\n")).await;
        let trusted = site.ca.client("trusted");
        let foreign = Ca::new("untrusted").client("foreign");
        let mut got = [false; 3];
        for (i, client) in [None, Some(&trusted), Some(&foreign)]
            .into_iter()
            .enumerate()
        {
            got[i] =
                matches!(site.get_root(client, ALL_VERSIONS).await, Ok((r, _)) if r.status == 200);
        }
        assert_eq!(got, expected, "{auth}: [no cert, trusted, foreign]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_tls13_refuses_a_tls12_client() {
    let site = TlsSite::start("  min_version: TLS13\n").await;
    let old = site.get_root(None, &[&rustls::version::TLS12]).await;
    assert!(old.is_err(), "a TLS 1.2-only client got through: {old:?}");
    let (reply, _) = site
        .get_root(None, &[&rustls::version::TLS13])
        .await
        .expect("TLS 1.3 client");
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_used_without_restart() {
    let site = TlsSite::start("").await;
    let client = tls_client(&site.ca.pem(), None, ALL_VERSIONS);
    let (_, first) = get_tls(&client, site.server.addr, "/")
        .await
        .expect("before rotation");

    let (cert, key) = site.ca.server("server two");
    write_atomic(&site.dir.path().join("server.key"), &key);
    write_atomic(&site.dir.path().join("server.crt"), &cert);
    tokio::time::sleep(NOTICE).await;
    let (reply, second) = get_tls(&client, site.server.addr, "/")
        .await
        .expect("after rotation");
    assert_eq!(reply.status, 200);
    assert_ne!(first, second, "still the old certificate after {NOTICE:?}");
    let expected = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(second, expected.as_ref());
}

use rustls::pki_types::pem::PemObject as _;

fn auth_config(dir: &Path, cost: u32) -> (PathBuf, String) {
    let hash = bcrypt::hash("s3cret", cost).unwrap();
    let path = write_config(
        dir,
        &format!(
            "basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        ),
    );
    (path, hash)
}

/// A server behind [`auth_config`] (bcrypt at `cost`): its folder, alice's hash, the server.
async fn auth_server(cost: u32, health_without_auth: bool) -> (tempfile::TempDir, String, Server) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, hash) = auth_config(dir.path(), cost);
    let server = start_with(&cfg, health_without_auth).await;
    (dir, hash, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_answers_401_with_a_challenge_and_lets_the_right_password_in() {
    let (_dir, _, server) = auth_server(4, false).await;

    let none = get_plain(server.addr, "/", None).await;
    assert_eq!(none.status, 401);
    let challenge = none.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic"), "{}", none.head);

    let wrong = get_plain(server.addr, "/", Some(("alice", "nope"))).await;
    assert_eq!(wrong.status, 401);
    let unknown = get_plain(server.addr, "/", Some(("mallory", "s3cret"))).await;
    assert_eq!(unknown.status, 401);
    let health = get_plain(server.addr, "/-/healthy", None).await;
    assert_eq!(health.status, 401, "health is exempt only when configured");

    let right = get_plain(server.addr, "/", Some(("alice", "s3cret"))).await;
    assert_eq!((right.status, right.body.as_str()), (200, "hello\n"));
    assert_eq!(right.header("x-frame-options").as_deref(), Some("deny"));
    assert_eq!(
        right.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(none.header("x-frame-options").as_deref(), Some("deny"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_can_be_exempt_from_auth() {
    let (_dir, _, server) = auth_server(4, true).await;
    assert_eq!(get_plain(server.addr, "/-/healthy", None).await.status, 200);
    assert_eq!(get_plain(server.addr, "/", None).await.status, 401);
}

/// CVE-2022-46146: the exporter toolkit cached successful logins by a key built from the stored
/// hash, so sending the hash itself as the password logged in once the cache held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2022_46146_the_stored_hash_is_not_a_password() {
    let (_dir, hash, server) = auth_server(4, false).await;
    // A real login first, so that any cache would be warm.
    assert_eq!(status_as(server.addr, "alice", "s3cret").await, 200);
    for _ in 0..3 {
        let r = get_plain(server.addr, "/", Some(("alice", &hash))).await;
        assert_eq!(r.status, 401, "the stored hash logged in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_take_as_long_as_wrong_passwords() {
    // Cost 6: each check takes milliseconds (more in a debug build), well above loopback noise.
    let (_dir, _, server) = auth_server(6, false).await;
    const ROUNDS: usize = 8;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        assert_eq!(status_as(server.addr, "alice", "nope").await, 401);
        wrong.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(status_as(server.addr, "mallory", "nope").await, 401);
        unknown.push(t.elapsed());
    }
    wrong.sort();
    unknown.sort();
    let (w, u) = (wrong[ROUNDS / 2], unknown[ROUNDS / 2]);
    eprintln!("median wrong password {w:?}, unknown user {u:?}");
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown user {u:?} vs wrong password {w:?}: ratio {ratio:.2}"
    );
    // The lower bound of the ratio is what proves unknown users are really checked: an answer
    // without a bcrypt check would be tens of times faster than a wrong password's.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_at_runtime_means_500_never_200_then_recovers() {
    let (dir, hash, server) = auth_server(4, false).await;
    assert_eq!(get_plain(server.addr, "/", None).await.status, 401);

    write_config(dir.path(), "basic_auth_users:\n  alice: [not, a, hash\n");
    tokio::time::sleep(NOTICE).await;
    for auth in [None, Some(("alice", "s3cret")), Some(("alice", "nope"))] {
        let r = get_plain(server.addr, "/", auth).await;
        assert_eq!(r.status, 500, "{auth:?} got {}", r.head);
    }
    assert_eq!(get_plain(server.addr, "/-/healthy", None).await.status, 500);

    write_config(dir.path(), &format!("basic_auth_users:\n  alice: {hash}\n"));
    tokio::time::sleep(NOTICE).await;
    assert_eq!(get_plain(server.addr, "/", None).await.status, 401);
    assert_eq!(status_as(server.addr, "alice", "s3cret").await, 200);
}

#[test]
fn the_recheck_interval_is_at_most_a_second() {
    assert!(RECHECK <= Duration::from_secs(1));
    assert!(NOTICE > RECHECK);
}

#[test]
fn serve_refuses_an_invalid_web_config_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "basic_auth_users:\n  alice: plain-text-password\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pingscope"))
        .args([
            "serve",
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("basic_auth_users.alice: not a bcrypt hash"),
        "{stderr}"
    );
}

#[test]
fn promtool_accepts_the_shipped_example() {
    if !support::require_program("promtool") {
        return;
    }
    let out = std::process::Command::new("promtool")
        .args(["check", "web-config", "config/web-config.yml"])
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_metrics_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls_files(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = tls_config(
        dir.path(),
        &format!("basic_auth_users:\n  prometheus: {hash}\n"),
    );
    let daemon = Daemon::start(
        &loopback_config(dir.path()),
        &[
            "--web.health-without-auth",
            "--web.config.file",
            web.to_str().expect("a UTF-8 path"),
        ],
    );
    let addr = daemon.addr();
    let client = tls_client(&ca.pem(), None, ALL_VERSIONS);
    let (anonymous, _) = get_tls_auth(&client, addr, "/metrics", None).await.unwrap();
    assert_eq!(anonymous.status, 401);
    let (health, _) = get_tls_auth(&client, addr, "/-/healthy", None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    let (api, _) = get_tls_auth(&client, addr, "/api/v1/targets", None)
        .await
        .unwrap();
    assert_eq!(api.status, 401);
    let (metrics, _) = get_tls_auth(&client, addr, "/metrics", Some(("prometheus", "s3cret")))
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("pingscope_"), "{}", metrics.body);
}
