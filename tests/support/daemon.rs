//! The one `pingscope serve` fixture: the real binary with a config, on a free 127.0.0.1 port.
//!
//! [`Daemon::start`] returns once `/-/healthy` answers 200 (or, with `--web.config.file`, once the
//! port accepts: TLS or auth may refuse a plain check). Its stderr goes to a file next to the
//! config; when a test panics while the daemon is alive, that log is printed. Drop sends SIGTERM,
//! waits [`STOP_TIMEOUT`], then kills the process (only this child, by its PID).
//!
//! Start it from a thread that entered the test network (`TestNet::enter`) when it should probe
//! there: the process inherits that thread's network namespace, and so does the HTTP client, built
//! lazily on first use by the calling thread.

use std::ffi::OsString;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::api::{Answer, Endpoint, client, content_type, probe_with, raw_status};
use super::expo::Scrape;

/// How long the daemon may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to exit after SIGTERM at drop before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

static STARTS: AtomicU32 = AtomicU32::new(0);

/// A running `pingscope serve`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    http: OnceLock<reqwest::blocking::Client>,
}

impl Endpoint for Daemon {
    fn url(&self, path: &str) -> String {
        Daemon::url(self, path)
    }
}

impl Daemon {
    /// `pingscope serve --config.file CONFIG --web.listen-address 127.0.0.1:FREE ARGS...`
    /// (`--log.level info` unless `args` set one).
    pub fn start(config: &Path, args: &[&str]) -> Daemon {
        Self::start_on(config, super::free_port(), args)
    }

    /// Writes `yaml` to `dir/serve.yml` (see [`super::write_config`]) and starts the daemon on it.
    pub fn serve(dir: &Path, yaml: &str) -> Daemon {
        Self::start(&super::write_config(dir, "serve.yml", yaml), &[])
    }

    /// As [`Daemon::start`], on this port.
    pub fn start_on(config: &Path, port: u16, args: &[&str]) -> Daemon {
        let args = args.iter().map(OsString::from).collect();
        Self::spawn(config.to_owned(), port, args, Vec::new())
    }

    /// As [`Daemon::start`], with these environment variables added.
    pub fn start_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let args = args.iter().map(OsString::from).collect();
        let env = env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        Self::spawn(config.to_owned(), super::free_port(), args, env)
    }

    /// The same config, port and arguments again (after this one stopped).
    pub fn restart(&self) -> Daemon {
        Self::spawn(
            self.config.clone(),
            self.port,
            self.args.clone(),
            self.env.clone(),
        )
    }

    fn spawn(
        config: PathBuf,
        port: u16,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
    ) -> Daemon {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = config.with_file_name(format!("daemon-{port}-{n}.log"));
        let file = std::fs::File::create(&log).expect("creating the daemon's log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pingscope"));
        cmd.arg("serve")
            .arg("--config.file")
            .arg(&config)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"));
        if !args.iter().any(|a| a == "--log.level") {
            cmd.args(["--log.level", "info"]);
        }
        let child = cmd
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawning pingscope serve");
        let plain = !args.iter().any(|a| a == "--web.config.file");
        let mut d = Daemon {
            child: Some(child),
            port,
            config,
            args,
            env,
            log,
            http: OnceLock::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = d.child.as_mut().map(Child::try_wait) {
                let log = d.log();
                d.child = None;
                panic!("pingscope serve exited early ({status}); its log:\n{log}");
            }
            let ready = if plain {
                raw_status(d.addr(), "/-/healthy") == Some(200)
            } else {
                TcpStream::connect(d.addr()).is_ok()
            };
            if ready {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "pingscope serve not ready within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `ws://127.0.0.1:PORT` + `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .expect("the daemon is running")
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Resident memory in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .expect("signalling the daemon");
    }

    /// Stops the process (SIGSTOP) and waits, bounded, until every thread of it is stopped: the
    /// signal is only queued when `kill` returns, and a thread still running may answer one
    /// more request.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let stopped = || {
            std::fs::read_dir(&tasks)
                .expect("reading /proc/PID/task")
                .filter_map(Result::ok)
                .all(|t| {
                    // The state follows the command name's closing parenthesis.
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                        s.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T'))
                    })
                })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(
                Instant::now() < deadline,
                "the daemon's threads did not all stop within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` and waits (bounded by `within`) for the exit; panics (after killing it) when
    /// it does not come.
    pub fn signal_and_wait(&mut self, sig: Signal, within: Duration) -> ExitStatus {
        self.signal(sig);
        match self.wait_exit(within) {
            Some(status) => {
                self.child = None;
                status
            }
            None => panic!(
                "pingscope serve did not exit within {within:?} after {sig}; log:\n{}",
                self.log()
            ),
        }
    }

    /// The blocking HTTP client (made on first use, by the calling thread).
    pub fn http(&self) -> &reqwest::blocking::Client {
        self.http.get_or_init(client)
    }

    /// GET: (status, Content-Type, body), or `None` on a transport error.
    pub fn try_get(&self, path: &str) -> Option<(u16, String, String)> {
        let resp = self.http().get(self.url(path)).send().ok()?;
        let status = resp.status().as_u16();
        let ct = content_type(&resp);
        Some((status, ct, resp.text().ok()?))
    }

    /// GET: (status, Content-Type, body).
    pub fn get(&self, path: &str) -> (u16, String, String) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} failed; daemon log:\n{}", self.log()))
    }

    /// POST with an empty body: (status, body).
    pub fn post(&self, path: &str) -> (u16, String) {
        let resp = self
            .http()
            .post(self.url(path))
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}; daemon log:\n{}", self.log()));
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// POST a JSON body: (status, JSON answer, or the text as a JSON string when it is not JSON).
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http()
            .post(self.url(path))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}; daemon log:\n{}", self.log()));
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    /// The raw `/metrics` body.
    pub fn metrics_text(&self) -> String {
        let (status, _, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// `/metrics`, parsed.
    pub fn scrape(&self) -> Scrape {
        Scrape::parse(&self.metrics_text())
    }

    /// Scrapes until `cond` holds (for at most `within`) and returns that scrape; otherwise fails
    /// the test, naming `what` and showing the daemon log.
    pub fn scrape_until(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let mut last = Scrape::default();
        let ok = super::wait_until(within, || {
            last = self.scrape();
            cond(&last)
        });
        assert!(
            ok,
            "{what}: not seen within {within:?}; daemon log:\n{}",
            self.log()
        );
        last
    }

    /// `/api/v1/targets`, as JSON.
    pub fn targets(&self) -> serde_json::Value {
        let (status, _, body) = self.get("/api/v1/targets");
        assert_eq!(status, 200, "GET /api/v1/targets: {body}");
        serde_json::from_str(&body).expect("/api/v1/targets is JSON")
    }

    /// `GET /probe` with these query pairs (URL-encoded here) and extra headers.
    pub fn probe_with(&self, query: &[(&str, &str)], headers: &[(&str, &str)]) -> Answer {
        probe_with(self.http(), self, query, headers)
    }

    /// `GET /probe` with these query pairs.
    pub fn probe(&self, query: &[(&str, &str)]) -> Answer {
        self.probe_with(query, &[])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if std::thread::panicking() && matches!(child.try_wait(), Ok(None)) {
            eprintln!(
                "--- log of pingscope serve on port {}:\n{}",
                self.port,
                self.log()
            );
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let exited = super::wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// The `sessions` section of a test config, so the store stays next to the config file.
pub const SESSIONS: &str = "sessions:\n  database: sessions.db\n";
