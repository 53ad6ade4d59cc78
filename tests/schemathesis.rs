//! schemathesis (property-based API testing from the OpenAPI document) against the live daemon:
//! no 5xx and no response that breaks the spec. Runs `scripts/schemathesis.sh`.
//!
//! schemathesis comes from PyPI into a venv under `target/` (`support::tools`); when it cannot
//! be installed the test skips with the reason, unless `CI` is set.
// Tests block their own thread while the daemon works.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::TestNet;
use support::api::base_config;
use support::daemon::Daemon;

#[test]
fn schemathesis_finds_no_server_error_or_spec_violation() {
    if !support::require_root() {
        return;
    }
    // Before entering the namespace: PyPI is not reachable from inside it.
    let exe = match support::tools::pypi_program(
        "schemathesis-venv",
        &["schemathesis"],
        "schemathesis",
    ) {
        Ok(exe) => exe,
        Err(why) => {
            support::require(false, &format!("schemathesis unavailable: {why}"));
            return;
        }
    };
    let net = TestNet::start(&json!({"default": {"delay": "1ms"}}));
    net.enter();
    let port = support::free_port();
    // Names resolve only through a closed loopback port, so generated host names fail fast
    // and no lookup leaves the namespace.
    let config = format!(
        "{}dns:\n  servers: [\"127.0.0.1:{}\"]\ntargets:\n  - name: lo\n    host: 127.0.0.1\n",
        base_config(16),
        support::free_port()
    );
    let d = Daemon::start_on(
        &support::write_config(net.dir(), "pingscope.yml", &config),
        port,
        &["--log.level", "warn"],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis.sh");
    let reports = net.dir().join("schemathesis-report");
    // Spawned from the entered thread: schemathesis runs inside the namespace too.
    let mut child = Command::new(script)
        .arg(d.url(""))
        .arg(&reports)
        .env("SCHEMATHESIS", &exe)
        // Its cache folder goes there too, not into the source tree.
        .current_dir(net.dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running scripts/schemathesis.sh");
    let limit = Duration::from_secs(150);
    let finished = support::wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("schemathesis output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        finished,
        "schemathesis still running after {limit:?}:\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
        out.status,
        d.log()
    );
    // It really tested the API: every non-WebSocket operation.
    let tail: String = stdout
        .lines()
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{tail}");
    assert!(stdout.contains("Tested: 10"), "{stdout}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
