//! The one harness of the integration tests.
//!
//! - [`TestNet`] (here): a network namespace with the test responder.
//! - [`daemon`]: the `pingscope serve` fixture and the HTTP helpers used against it.
//! - [`inproc`]: the API in-process with the fake pinger, no root needed.
//! - [`dns`]: the loopback DNS server (hickory-server) with a mutable zone.
//! - [`mesh`]: several namespaces joined by veth pairs on a bridge, for daemons that ping each other.
//! - [`expo`]: the Prometheus text exposition reader.
//! - [`web`]: a test PKI and a raw HTTP/1.1 (plain or TLS) client.
//! - [`tools`]: test tools from PyPI and npm, installed under `target/` on first use.
//! - [`require`], [`free_port`], [`write_config`], [`wait_until`], [`files_under`], [`run_output`],
//!   [`run_with_input`].
//!
//! [`TestNet::start`] creates a network namespace of its own, starts the `pingscope-testnet`
//! responder in it (a TUN device answering echo in 198.18.0.0/15 and 2001:db8::/32 per the
//! given profiles) and hands out [`Command`]s that run inside that namespace. Those ranges are
//! only ever used from inside it: in the root namespace they would follow the default route.
//! See docs/testnet.md.
//!
//! Failures here panic with a message: in a test, that is the failure report.
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

pub mod api;
pub mod burst;
pub mod daemon;
pub mod dns;
pub mod expo;
pub mod inproc;
pub mod mesh;
pub mod tools;
pub mod web;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the responder may take to print READY.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How far before a prober's own kernel transmit stamp the test network's arrival stamp of the
/// request may lie. The responder stamps arrival with its packet socket on the device, which the
/// kernel serves just before the device's transmit routine, where the prober's transmit stamp is
/// taken; on a VM a vCPU stolen between the two stretches that gap. An answer held `delay` from
/// arrival can so show an RTT up to this much below `delay` on a prober with kernel transmit
/// stamps. Seen on 2026-12-03 against a capture's kernel stamps at both ends: 3.8 µs on average,
/// 272 µs at worst over 1,500 probes under CPU hogs; a floor check allows this much. A CI run
/// on 2026-12-04 saw 1.36 ms once in 600 probes: `testnet_tcpudp`, the test with the most
/// probes, lets 2 % of its RTTs lie further below (none more than 5 ms).
pub const ARRIVAL_LEAD: Duration = Duration::from_micros(500);

/// `setpriv` arguments for "nobody, with nothing".
pub const UNPRIVILEGED: [&str; 9] = [
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
    "--bounding-set",
    "-all",
    "--inh-caps",
    "-all",
];

/// One packet as the responder logged it (docs/testnet.md, "The log").
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct LogEntry {
    /// Wall-clock arrival, ns since the Unix epoch.
    pub time_ns: u64,
    /// `icmp`, `udp` or `tcp`.
    pub proto: String,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    /// `ip4` or `ip6`.
    pub family: String,
    /// ICMP echo identifier and sequence (0 for UDP and TCP).
    #[serde(default)]
    pub id: u16,
    #[serde(default)]
    pub seq: u16,
    /// UDP and TCP ports.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// UDP checksum field as sent.
    #[serde(default)]
    pub checksum: Option<u16>,
    /// TCP flags, e.g. `SYN` or `FIN|ACK`.
    pub flags: Option<String>,
    /// TTL / hop limit as received.
    pub ttl: u8,
    /// Flow hash (what ECMP routers hash), 16 hex digits.
    pub flow: String,
    pub size: usize,
    /// `replied`, `unreachable`, `time_exceeded`, `dropped`, `blackholed`, `overflow`,
    /// `send_failed`, `misconfigured`, `abandoned` (still held at shutdown); on a path also
    /// `rate_limited` and `silent`; UDP `echoed`, `port_unreachable`, `silent`; a TCP SYN
    /// `syn_ack`, `refused`, `silent`; the rest of a TCP connection `established`, `fin`,
    /// `closed`, `rst`, `segment`, or `reset` (no such connection).
    pub action: String,
    /// The hop (1-based) where the packet expired or was lost on a path, and its address.
    pub hop: Option<u8>,
    pub hop_addr: Option<std::net::IpAddr>,
    /// Copies actually written (0 when not answered).
    pub copies: u32,
    pub scheduled_delay_ns: Option<u64>,
    pub actual_delay_ns: Option<u64>,
    /// Kernel hand-over to the responder's read; `None` without a kernel timestamp.
    pub read_lag_ns: Option<u64>,
}

impl LogEntry {
    /// Actual minus scheduled delay, for answered requests.
    pub fn send_error(&self) -> Option<Duration> {
        let (s, a) = (self.scheduled_delay_ns?, self.actual_delay_ns?);
        Some(Duration::from_nanos(a.saturating_sub(s)))
    }
}

/// The responder's send-time error over the answers so far (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingError {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// A running test network. Dropping it stops the responder and deletes the namespace.
///
/// Create and drop it on the same thread: the responder has a parent-death signal, which
/// Linux sends when the *thread* that spawned it ends.
#[derive(Debug)]
pub struct TestNet {
    ns: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl TestNet {
    /// Start a namespace and the responder with these profiles (the profile file format of
    /// docs/testnet.md); returns once the device is up and routed.
    pub fn start(profiles: &serde_json::Value) -> TestNet {
        remove_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let ns = format!("psn-{}-{n}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &ns]));
        let dir = tempfile::tempdir().expect("creating a temp dir for the test network");
        let mut net = TestNet {
            log_path: dir.path().join("responder.jsonl"),
            ns,
            child: None,
            dir,
        };
        run_checked(net.command("ip").args(["link", "set", "lo", "up"]));
        let profile_path = net.dir.path().join("profiles.json");
        std::fs::write(&profile_path, profiles.to_string()).expect("writing the profile file");
        let stderr_path = net.dir.path().join("responder.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("creating the stderr file");
        let mut cmd = net.command(env!("CARGO_BIN_EXE_pingscope-testnet"));
        cmd.arg("--profiles")
            .arg(&profile_path)
            .arg("--log")
            .arg(&net.log_path)
            .arg("--stats")
            .arg(net.dir.path().join("stats.jsonl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal,
        // so a test process killed outright does not leave the responder behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawning pingscope-testnet");
        let stdout = child.stdout.take().expect("responder stdout is piped");
        net.child = Some(child);
        let (tx, rx) = mpsc::channel();
        // The reader thread ends when the responder closes stdout (at exit).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "READY" => return net,
                Ok(_) => continue,
                Err(_) => {
                    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    drop(net);
                    panic!(
                        "pingscope-testnet did not become READY within {READY_TIMEOUT:?}; stderr:\n{err}"
                    );
                }
            }
        }
    }

    /// [`TestNet::start`] for a test that needs root, `None` (the test returns) where it may
    /// not run (see [`require_root`]).
    #[track_caller]
    pub fn start_if_root(profiles: &serde_json::Value) -> Option<TestNet> {
        require_root().then(|| TestNet::start(profiles))
    }

    /// [`TestNet::start_if_root`], then [`TestNet::enter`]: for a test that runs wholly inside
    /// the test network.
    #[track_caller]
    pub fn start_and_enter(profiles: &serde_json::Value) -> Option<TestNet> {
        let net = TestNet::start_if_root(profiles)?;
        net.enter();
        Some(net)
    }

    /// Moves the calling thread into the namespace. Sockets it opens, and threads and processes
    /// it starts, from now on live there (a test process runs one test, so this is safe).
    pub fn enter(&self) {
        enter_namespace(&self.ns);
    }

    /// Replaces the profiles and makes the responder re-read them (SIGHUP). It reloads at its
    /// next loop turn; the log shows from which request on the new profiles apply.
    pub fn set_profiles(&self, profiles: &serde_json::Value) {
        let path = self.dir.path().join("profiles.json");
        std::fs::write(&path, profiles.to_string()).expect("writing the profile file");
        let child = self.child.as_ref().expect("the responder runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
            .expect("SIGHUP the responder");
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// A directory that lives as long as the test network, for the test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program`, run as root inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// `program`, run inside the namespace as uid/gid 65534 with no groups and no capabilities
    /// (an empty bounding set, so file capabilities grant none either; a program that carries
    /// them, like Debian's `ping`, then fails to exec), after allowing every group to open ICMP
    /// datagram sockets there (`net.ipv4.ping_group_range` is per namespace).
    pub fn command_unprivileged(&self, program: impl AsRef<OsStr>) -> Command {
        run_checked(
            self.command("sysctl")
                .args(["-qw", "net.ipv4.ping_group_range=0 2147483647"]),
        );
        let mut cmd = self.command("setpriv");
        cmd.args(UNPRIVILEGED).arg(program);
        cmd
    }

    /// The log so far (a line still being written is skipped).
    pub fn log(&self) -> Vec<LogEntry> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
            .collect()
    }

    /// Wait (bounded) until the log holds at least `n` entries; returns the log either way.
    pub fn wait_log(&self, n: usize, timeout: Duration) -> Vec<LogEntry> {
        let mut entries = self.log();
        wait_until(timeout, || {
            entries = self.log();
            entries.len() >= n
        });
        entries
    }

    /// The responder's timing error (actual minus scheduled send time, counted from the kernel's
    /// hand-over of the request when the responder has kernel timestamps) over every answer so far.
    pub fn timing_error(&self) -> TimingError {
        let mut errs: Vec<Duration> = self.log().iter().filter_map(LogEntry::send_error).collect();
        errs.sort_unstable();
        let rank = |q: f64| {
            if errs.is_empty() {
                return Duration::ZERO;
            }
            let i = ((q * errs.len() as f64).ceil() as usize).clamp(1, errs.len()) - 1;
            errs[i]
        };
        TimingError {
            samples: errs.len(),
            p50: rank(0.5),
            p99: rank(0.99),
            max: errs.last().copied().unwrap_or_default(),
        }
    }

    /// The responder's own timing report, asked for with SIGUSR1 (bounded wait for it).
    pub fn reported_timing(&self) -> TimingError {
        let path = self.dir.path().join("stats.jsonl");
        let count = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
        let before = count(&path);
        self.signal(nix::sys::signal::Signal::SIGUSR1);
        assert!(
            wait_until(Duration::from_secs(5), || count(&path) > before),
            "no timing report after SIGUSR1"
        );
        let text = std::fs::read_to_string(&path).expect("reading the stats file");
        let last = text.lines().last().expect("a report line");
        let v: serde_json::Value = serde_json::from_str(last).expect("a JSON report");
        let ns = |k: &str| Duration::from_nanos(v[k].as_u64().expect("a number"));
        TimingError {
            samples: v["samples"].as_u64().expect("samples") as usize,
            p50: ns("p50_ns"),
            p99: ns("p99_ns"),
            max: ns("max_ns"),
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Stop the responder (SIGTERM, so the log is complete) and return the full log.
    pub fn stop(&mut self) -> Vec<LogEntry> {
        self.stop_child();
        self.log()
    }

    fn stop_child(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let Some(mut child) = self.child.take() else {
            return;
        };
        let exited = wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.stop_child();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

/// Namespaces `psn-PID-…` left by test processes that no longer exist (killed before `Drop`).
pub fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("psn-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        // Only our own `psn-<pid>-<n>` names, and only when that process is gone.
        let ours = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Moves the calling thread into the named network namespace (see [`TestNet::enter`]).
pub fn enter_namespace(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: setns on an fd we own; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {path}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `cmd`; panics with its stderr when it fails.
pub fn run_checked(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` to its end (stdout and stderr captured): its output, and what it wrote, stdout then
/// stderr, as one text. Panics when it cannot be started.
pub fn run_output(cmd: &mut Command) -> (Output, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = output_text(&out);
    (out, text)
}

/// As [`run_output`], with `input` written to its stdin.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> (Output, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    std::io::Write::write_all(&mut stdin, input)
        .unwrap_or_else(|e| panic!("writing to {cmd:?}: {e}"));
    // Closed, so the program sees the end of its input.
    drop(stdin);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    let text = output_text(&out);
    (out, text)
}

/// What a program wrote, stdout then stderr, as one text.
pub fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The skip policy, in one place: true when `ok`. Otherwise, under `CI` (set to anything but
/// `false` or `0`) it panics with `why`, since a skipped test there would hide a gap; outside CI it
/// prints why the test is skipped and returns false (the test then returns).
#[track_caller]
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!(
            "{why}, and CI is set: no test may skip there (install what scripts/test installs, run as root)"
        );
    }
    eprintln!("skipped: {why}");
    false
}

/// Whether `CI` is set (to anything but `false`, `0` or nothing).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// True when the test may use namespaces, TUN devices and raw sockets (see [`require`]).
#[track_caller]
pub fn require_root() -> bool {
    require(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, TUN device, raw sockets)",
    )
}

/// True when `program` is on PATH (see [`require`]).
#[track_caller]
pub fn require_program(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    require(
        found,
        &format!("needs `{program}` on PATH (scripts/test installs its package)"),
    )
}

/// True when this namespace has `::1` (see [`require`]).
#[track_caller]
pub fn require_ipv6_loopback() -> bool {
    require(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "needs IPv6 on loopback (::1)",
    )
}

/// A TCP port on 127.0.0.1 (of the caller's namespace) that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Writes `text` to `dir/name` (`{{DIR}}` in it becomes `dir`) and returns the path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let text = text.replace("{{DIR}}", &dir.display().to_string());
    std::fs::write(&path, text).expect("writing a config file");
    path
}

/// A test-network path of `n` hops `prefix1..prefixN`, each adding `ms` milliseconds (the
/// `hops` of a path profile, docs/testnet.md).
pub fn hops(prefix: &str, n: usize, ms: u64) -> serde_json::Value {
    (1..=n)
        .map(|i| serde_json::json!({"addr": format!("{prefix}{i}"), "delay": format!("{ms}ms")}))
        .collect()
}

/// A path profile: `hops`, then after `after` the three hops 198.18.20.1-3 (1 ms each), the new
/// path of the tests that watch a path change.
pub fn changing_path(hops: serde_json::Value, after: &str) -> serde_json::Value {
    serde_json::json!({"hops": hops, "change_after": after, "then": self::hops("198.18.20.", 3, 1)})
}

/// How many of `names` each of `shards` keeps; fails when a name is kept by none or by two.
pub fn shard_split(
    shards: &[pingscope::config::Shard],
    names: impl IntoIterator<Item = String>,
) -> Vec<usize> {
    let mut sizes = vec![0; shards.len()];
    for name in names {
        let owners: Vec<usize> = (0..shards.len())
            .filter(|&i| shards[i].keeps(&name))
            .collect();
        assert_eq!(owners.len(), 1, "{name} is kept by shards {owners:?}");
        sizes[owners[0]] += 1;
    }
    sizes
}

/// A `targets:` section of `n` loopback targets at 127.`net`.x.y, named `t0`, `t1`, ... (the
/// number zero-padded to `width` digits).
pub fn loopback_targets(n: usize, net: u8, width: usize) -> String {
    let mut yaml = String::from("targets:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{name: t{i:0width$}, host: 127.{net}.{}.{}}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    yaml
}

/// Every file under `dir` (recursively) whose name ends in `.ext`, each folder's entries in
/// sorted order.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for path in entries {
        if path.is_dir() {
            out.extend(files_under(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes; true when it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Exact two-sided 99.9 % interval of Binomial(n, p): the smallest [lo, hi] with at most
/// 0.05 % probability below lo and at most 0.05 % above hi.
pub fn binomial_interval(n: u32, p: f64) -> (u32, u32) {
    let mut pmf = vec![0.0f64; n as usize + 1];
    // log-space to stay finite for any n.
    let ln_fact = |k: u32| (1..=k).map(|i| f64::from(i).ln()).sum::<f64>();
    for k in 0..=n {
        let ln = ln_fact(n) - ln_fact(k) - ln_fact(n - k)
            + f64::from(k) * p.ln()
            + f64::from(n - k) * (1.0 - p).ln();
        pmf[k as usize] = ln.exp();
    }
    let tail = 0.0005;
    let (mut lo, mut acc) = (0u32, 0.0);
    while acc + pmf[lo as usize] <= tail {
        acc += pmf[lo as usize];
        lo += 1;
    }
    let (mut hi, mut acc) = (n, 0.0);
    while acc + pmf[hi as usize] <= tail {
        acc += pmf[hi as usize];
        hi -= 1;
    }
    (lo, hi)
}

/// Datagrams a UDP echo responder must not answer: empty, a bare magic, a token cut short, an
/// answer (direction reply), an oversized request and plain junk.
pub fn udp_echo_junk() -> Vec<Vec<u8>> {
    let good = pingscope::engine::udp::echo_request(7, 1, 64);
    let mut answer = good.clone();
    answer[4] = 2;
    let mut oversized = pingscope::engine::udp::echo_request(7, 1, 9000);
    oversized[30] = 1;
    vec![
        vec![],
        b"PSCU".to_vec(),
        good[..23].to_vec(),
        answer,
        oversized,
        vec![0u8; 100],
    ]
}
