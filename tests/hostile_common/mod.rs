//! What `tests/hostile.rs` and `tests/faults_load.rs` share: the daemon binary on loopback,
//! `check-config` under a wall-clock and memory bound, and small HTTP helpers. Kept apart from
//! `tests/support` on purpose (that harness is being reworked); every wait here is bounded and
//! every child is killed by its own PID.

#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr
)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Address space a child may map: a reader that does not bound its reads fails on it (an
/// allocation failure) long before the machine runs out of memory.
pub const CHILD_ADDRESS_SPACE: u64 = 8 << 30;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pingscope")
}

fn limit_memory(cmd: &mut Command) {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: CHILD_ADDRESS_SPACE,
                rlim_max: CHILD_ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What a bounded run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// Exit status; `None` when it was killed at the deadline.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `pingscope ARGS`, killed (by its PID) if it is still running after `limit`.
pub fn run_bounded(args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"));
    limit_memory(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn pingscope");
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// The `Authorization` value of HTTP basic auth.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A web config letting in `alice` with password `s3cret` (bcrypt at this `cost`).
pub fn alice_web_config(cost: u32) -> String {
    format!(
        "basic_auth_users:\n  alice: {}\n",
        bcrypt::hash("s3cret", cost).unwrap()
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// `pingscope serve` on 127.0.0.1, killed at drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub http: reqwest::blocking::Client,
}

impl Daemon {
    /// Starts the daemon with `config` and any extra flags; waits for `/-/healthy` (which may
    /// answer 401 when auth is on: any answer means it is up).
    pub fn start(dir: &Path, config: &Path, extra: &[&str]) -> Daemon {
        let port = free_port();
        let log = dir.join(format!("daemon-{port}.log"));
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config.file")
            .arg(config)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("daemon log"));
        limit_memory(&mut cmd);
        let child = cmd.spawn().expect("spawning pingscope serve");
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut d = Daemon {
            child,
            port,
            log,
            http,
        };
        let up = wait_until(Duration::from_secs(60), || {
            d.http
                .get(d.url("/-/healthy"))
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok()
        });
        assert!(up, "daemon did not come up; log:\n{}", d.log_text());
        assert!(d.alive(), "daemon exited; log:\n{}", d.log_text());
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match self.http.get(self.url(path)).send() {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().unwrap_or_default())
            }
            Err(e) => panic!("GET {path}: {e}\nlog:\n{}", self.log_text()),
        }
    }

    pub fn post(&self, path: &str, body: Option<&serde_json::Value>) -> (u16, String) {
        let mut req = self.http.post(self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send() {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().unwrap_or_default())
            }
            Err(e) => panic!("POST {path}: {e}\nlog:\n{}", self.log_text()),
        }
    }

    /// Resident set size of the daemon, in bytes.
    pub fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Sends a signal to the daemon (by its PID).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Value of the first sample of `name` (exact series text, labels included) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A tmpfs of `size` mounted at `dir` (root only), unmounted at drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map_err(|e| format!("running mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status} (needs root)"));
        }
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    /// Fills the file system with one file; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        path
    }

    /// Keeps the file system full for `hold`, then frees it.
    pub fn fill_for(&self, hold: Duration) {
        let filler = self.fill();
        std::thread::sleep(hold);
        std::fs::remove_file(&filler).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Starts a session; returns its id.
pub fn start_session(d: &Daemon, body: serde_json::Value) -> String {
    let (status, text) = d.post("/api/v1/sessions", Some(&body));
    assert_eq!(status, 201, "starting a session: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("session JSON");
    v["id"].as_str().expect("id").to_owned()
}

/// The session's detail once it has ended (bounded wait).
pub fn ended_session(d: &Daemon, id: &str, limit: Duration) -> serde_json::Value {
    let end = Instant::now() + limit;
    loop {
        let (status, text) = d.get(&format!("/api/v1/sessions/{id}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status == 200 && v["status"] != "running" {
            return v;
        }
        assert!(
            Instant::now() < end,
            "session {id} still running after {limit:?}: {status} {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
