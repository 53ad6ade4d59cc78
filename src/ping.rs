//! `pingscope ping`: ping hosts concurrently, stream one line per probe outcome, then a summary
//! per address.
//!
//! The flags become one [`ProbeRequest`] per host, checked by [`crate::probe::validate`] like
//! every other front's; each resolved address is run by [`crate::probe::run()`] on the shared
//! engine. Lines are written whole under the output lock and flushed as they happen, so a
//! reader of the pipe sees each outcome at once.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::Pinger;
use crate::exit;
use crate::probe::{self, Defaults, Limits, ProbeRequest, RawRequest, RequestError};
use crate::resolve::Resolver;
use crate::sample::{Sample, SampleType, Summary};
use crate::stats::Accumulator;

/// Where lines go: stdout in the binary, a buffer in tests.
pub type Output = Arc<Mutex<dyn Write + Send>>;

/// Output format of `ping`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (default when stdout is not a terminal).
    Json,
    /// Human text like iputils ping (default on a terminal).
    Text,
}

/// What the command line asks for, before any check.
#[derive(Clone, Debug)]
pub struct PingOptions {
    /// Hosts as typed.
    pub hosts: Vec<String>,
    /// Everything else about the probes, as typed (its target is each host in turn).
    pub request: RawRequest,
    /// DNS server to ask instead of the system resolver.
    pub dns_server: Option<SocketAddr>,
    /// Output format; `None`: text on a terminal, else JSON.
    pub format: Option<Format>,
}

/// One run of `ping`, checked: a request per host.
#[derive(Clone, Debug)]
pub struct PingPlan {
    /// One request per host, in the order typed.
    pub requests: Vec<ProbeRequest>,
    /// Output format.
    pub format: Format,
}

impl PingPlan {
    /// Checks every host's request with the rules every front shares.
    pub fn new(options: &PingOptions, format: Format) -> Result<Self, RequestError> {
        let requests = options
            .hosts
            .iter()
            .map(|host| {
                let raw = RawRequest {
                    target: Some(host.clone()),
                    ..options.request.clone()
                };
                probe::validate(&raw, &Defaults::default(), &Limits::default())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { requests, format })
    }
}

/// How a run ended, per address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunResult {
    /// Hosts that could not be resolved.
    pub unresolved: usize,
    /// Addresses that got no reply at all.
    pub silent: usize,
    /// Addresses pinged.
    pub addresses: usize,
}

impl RunResult {
    /// The documented exit status.
    pub fn exit_code(&self) -> u8 {
        if self.unresolved > 0 {
            exit::EXIT_UNRESOLVED
        } else if self.silent > 0 {
            exit::EXIT_NO_REPLY
        } else {
            exit::EXIT_OK
        }
    }
}

/// Entry point of the subcommand: check, build the runtime, engine and resolver, run, map to an
/// exit code.
pub fn main(options: PingOptions) -> u8 {
    let format = options
        .format
        .unwrap_or(if std::io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        });
    let plan = match PingPlan::new(&options, format) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln_safe(&format!("pingscope: {e}"));
            return exit::EXIT_USAGE;
        }
    };
    // TCP and UDP probes need no ICMP permission: the ICMP engine then starts only if used.
    let icmp = plan.requests.iter().any(|r| r.kind.uses_icmp());
    with_engine(options.dns_server, icmp, |engine, resolver| async move {
        let cancel = CancellationToken::new();
        spawn_signal_watch(cancel.clone());
        let out: Output = Arc::new(Mutex::new(std::io::stdout()));
        run(&plan, engine, &resolver, out, cancel).await.exit_code()
    })
}

/// Builds the runtime, the engine and the resolver of a one-shot command and runs `body` on
/// them; a failure to set them up is printed and mapped to its exit status (77: no permission
/// for ICMP sockets). With `icmp`, the ICMP engine opens at once, so a missing permission is
/// told before anything is sent; without, it opens on first use.
pub fn with_engine<F, Fut>(dns_server: Option<SocketAddr>, icmp: bool, body: F) -> u8
where
    F: FnOnce(Arc<crate::engine::Engine>, Resolver) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln_safe(&format!("pingscope: cannot start the runtime: {e}"));
            return exit::EXIT_FAILURE;
        }
    };
    runtime.block_on(async move {
        let engine = if icmp {
            crate::engine::Engine::new(Default::default())
        } else {
            crate::engine::Engine::lazy(Default::default())
        };
        let engine = match engine {
            Ok(e) => e,
            Err(e) => {
                eprintln_safe(&format!("pingscope: {e}"));
                return match e {
                    crate::engine::SocketError::PermissionDenied { .. } => exit::EXIT_NOPERM,
                    _ => exit::EXIT_FAILURE,
                };
            }
        };
        let resolver = match dns_server {
            Some(server) => Resolver::with_servers(&[server]),
            None => Resolver::system(),
        };
        let resolver = match resolver {
            Ok(r) => r,
            Err(e) => {
                eprintln_safe(&format!("pingscope: cannot set up DNS: {e}"));
                return exit::EXIT_FAILURE;
            }
        };
        body(engine, resolver).await
    })
}

/// Prints a message on stderr; a closed stderr is no error worth more.
pub(crate) fn eprintln_safe(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// First Ctrl-C / SIGTERM stops sending (summaries still print); a second one exits at once.
pub(crate) fn spawn_signal_watch(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut stops = 0;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {},
            }
            stops += 1;
            cancel.cancel();
            if stops > 1 {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "a second Ctrl-C means: stop now, skip the summaries"
                )]
                std::process::exit(i32::from(exit::EXIT_NO_REPLY));
            }
        }
    });
}

/// Runs the plan: resolve every host concurrently, ping every address, print, summarize.
pub async fn run(
    plan: &PingPlan,
    pinger: Arc<dyn Pinger>,
    resolver: &Resolver,
    out: Output,
    cancel: CancellationToken,
) -> RunResult {
    let mut lookups = tokio::task::JoinSet::new();
    for (i, request) in plan.requests.iter().enumerate() {
        let resolver = resolver.clone();
        let host = request.target.clone();
        let family = request.family;
        lookups.spawn(async move { (i, resolver.lookup(&host, family).await) });
    }
    let mut resolved = Vec::new();
    let mut result = RunResult::default();
    while let Some(joined) = lookups.join_next().await {
        let Ok((i, lookup)) = joined else { continue };
        let host = &plan.requests[i].target;
        match lookup {
            Ok(r) => resolved.extend(r.addrs.into_iter().map(|ip| (i, ip))),
            Err(e) => {
                result.unresolved += 1;
                let s = Sample::local_error(host, host, None, None, e.to_string());
                emit_sample(&out, plan.format, &s);
                emit_summary(
                    &out,
                    plan.format,
                    &probe::summary(host, None, &Accumulator::new()),
                    None,
                );
            }
        }
    }
    resolved.sort();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ip) in resolved {
        let request = plan.requests[i].clone();
        if plan.format == Format::Text {
            write_line(
                &out,
                &format!(
                    "PING {} ({ip}) {}({}) bytes of data.",
                    request.target,
                    request.size,
                    usize::from(request.size) + 8 + if ip.is_ipv4() { 20 } else { 40 }
                ),
            );
        }
        tasks.spawn(run_address(
            request,
            ip,
            pinger.clone(),
            out.clone(),
            plan.format,
            cancel.clone(),
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        result.addresses += 1;
        match joined {
            Ok(acc) if acc.tally().received > 0 => {}
            _ => result.silent += 1,
        }
    }
    result
}

/// Runs one address through the shared runner, printing as it goes, then its summary.
async fn run_address(
    request: ProbeRequest,
    ip: IpAddr,
    pinger: Arc<dyn Pinger>,
    out: Output,
    format: Format,
    cancel: CancellationToken,
) -> Accumulator {
    let started = Instant::now();
    let acc = probe::run(&pinger, &request, ip, None, &cancel, |s| {
        emit_sample(&out, format, &s);
    })
    .await;
    emit_summary(
        &out,
        format,
        &probe::summary(&request.target, Some(ip), &acc),
        Some(started.elapsed()),
    );
    acc
}

/// Writes one whole line and flushes it, so a reader of the pipe sees it at once.
pub(crate) fn write_line(out: &Output, line: &str) {
    let mut w = out.lock();
    // A closed pipe (`| head`) is not an error worth reporting per line.
    let _ = writeln!(w, "{line}");
    let _ = w.flush();
}

fn emit_sample(out: &Output, format: Format, s: &Sample) {
    let line = match format {
        Format::Json => serde_json::to_string(s).unwrap_or_default(),
        Format::Text => text_sample(s),
    };
    if !line.is_empty() {
        write_line(out, &line);
    }
}

fn emit_summary(out: &Output, format: Format, s: &Summary, elapsed: Option<Duration>) {
    match format {
        Format::Json => write_line(out, &serde_json::to_string(s).unwrap_or_default()),
        Format::Text => write_line(out, &text_summary(s, elapsed)),
    }
}

fn text_sample(s: &Sample) -> String {
    let ip = s.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let seq = s.seq.unwrap_or(0);
    let rtt = s.rtt_ms.map(|r| format!("{r:.3}")).unwrap_or_default();
    let ttl = s.ttl.map(|t| format!(" ttl={t}")).unwrap_or_default();
    let size = s.size.unwrap_or(0);
    match s.kind {
        SampleType::Reply if s.refused => {
            format!("refused (RST) from {ip}: seq={seq} time={rtt} ms")
        }
        SampleType::Reply => format!("{size} bytes from {ip}: icmp_seq={seq}{ttl} time={rtt} ms"),
        SampleType::Duplicate => {
            format!("{size} bytes from {ip}: icmp_seq={seq}{ttl} time={rtt} ms (DUP!)")
        }
        SampleType::Late => {
            format!(
                "{size} bytes from {ip}: icmp_seq={seq}{ttl} time={rtt} ms (LATE, counted lost)"
            )
        }
        SampleType::Timeout => format!("no answer from {ip} for icmp_seq={seq}"),
        SampleType::Hop => format!(
            "{ip}: ttl={} {} {}",
            s.ttl.unwrap_or(0),
            s.result.as_deref().unwrap_or("hop"),
            s.from.map(|f| f.to_string()).unwrap_or_default()
        ),
        SampleType::Error => match (s.from, s.icmp_type) {
            (Some(from), Some(t)) => format!(
                "From {from} icmp_seq={seq} {} (type {t}, code {})",
                s.error.as_deref().unwrap_or("error"),
                s.icmp_code.unwrap_or(0)
            ),
            _ => format!("{}: {}", s.host, s.error.as_deref().unwrap_or("error")),
        },
    }
}

fn text_summary(s: &Summary, elapsed: Option<Duration>) -> String {
    let mut text = format!(
        "\n--- {} ping statistics ---\n{} packets transmitted, {} received{}{}, {:.1}% packet loss",
        s.host,
        s.sent,
        s.received,
        if s.duplicates > 0 {
            format!(", +{} duplicates", s.duplicates)
        } else {
            String::new()
        },
        if s.errors > 0 {
            format!(", +{} errors", s.errors)
        } else {
            String::new()
        },
        s.loss_ratio * 100.0
    );
    if let Some(e) = elapsed {
        text.push_str(&format!(", time {}ms", e.as_millis()));
    }
    if let Some(r) = &s.rtt_ms {
        text.push_str(&format!(
            "\nrtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms, p50/p95/p99 = {:.3}/{:.3}/{:.3} ms",
            r.min, r.avg, r.max, r.stddev, r.p50, r.p95, r.p99
        ));
    }
    if let Some(j) = s.jitter_ms {
        text.push_str(&format!(
            "\njitter {j:.3} ms (rfc3550 {:.3} ms)",
            s.jitter_rfc3550_ms.unwrap_or(0.0)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::IcmpErrorKind;
    use crate::engine::fake::{FakePinger, Step};

    fn plan(hosts: &[&str], count: u64) -> PingPlan {
        let options = PingOptions {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            request: RawRequest {
                count: Some(count.to_string()),
                interval: Some("100ms".to_owned()),
                timeout: Some("500ms".to_owned()),
                ..RawRequest::default()
            },
            dns_server: None,
            format: Some(Format::Json),
        };
        PingPlan::new(&options, Format::Json).unwrap_or_else(|e| panic!("{e}"))
    }

    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn run_fake(fake: FakePinger, p: PingPlan) -> (RunResult, Vec<serde_json::Value>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let out: Output = Arc::new(Mutex::new(Buf(buf.clone())));
        let resolver = Resolver::system().unwrap_or_else(|e| panic!("resolver: {e}"));
        let r = run(&p, Arc::new(fake), &resolver, out, CancellationToken::new()).await;
        let text = String::from_utf8_lossy(&buf.lock()).into_owned();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
            .collect();
        (r, lines)
    }

    fn of_type<'a>(lines: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
        lines.iter().filter(|l| l["type"] == t).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn streams_samples_then_summary() {
        let fake = FakePinger::new();
        let ip: IpAddr = "192.0.2.7".parse().unwrap_or_else(|_| unreachable!());
        fake.script(
            ip,
            vec![
                // Late: the timeout fires at 500 ms, the reply comes at 550 ms, while seq 2
                // is still pending, so the run is still listening.
                Step::Reply {
                    rtt: Duration::from_millis(550),
                    ttl: 57,
                },
                Step::Drop,
                Step::Reply {
                    rtt: Duration::from_millis(10),
                    ttl: 57,
                },
                Step::Duplicate {
                    rtt: Duration::from_millis(20),
                    gap: Duration::from_millis(5),
                },
                Step::Error {
                    after: Duration::from_millis(3),
                    kind: IcmpErrorKind::Unreachable,
                },
            ],
        );
        let (r, lines) = run_fake(fake, plan(&["192.0.2.7"], 5)).await;
        assert_eq!(r.exit_code(), exit::EXIT_OK);
        assert_eq!(of_type(&lines, "reply").len(), 2);
        assert_eq!(
            of_type(&lines, "timeout").len(),
            2,
            "drop and late both time out"
        );
        assert_eq!(of_type(&lines, "late").len(), 1);
        assert_eq!(of_type(&lines, "duplicate").len(), 1);
        let errors = of_type(&lines, "error");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["icmp_type"], 3);
        let s = of_type(&lines, "summary");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["sent"], 5);
        assert_eq!(s[0]["received"], 2);
        assert_eq!(s[0]["lost"], 3);
        assert_eq!(s[0]["loss_ratio"], 0.6);
        assert_eq!(s[0]["rtt_ms"]["min"], 10.0);
        assert_eq!(
            lines.last().map(|l| l["type"].clone()),
            Some("summary".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silent_host_exits_1_and_others_continue() {
        let fake = FakePinger::new();
        let ok: IpAddr = "192.0.2.1".parse().unwrap_or_else(|_| unreachable!());
        fake.script(
            ok,
            vec![Step::Reply {
                rtt: Duration::from_millis(1),
                ttl: 64,
            }],
        );
        let (r, lines) = run_fake(fake, plan(&["192.0.2.1", "192.0.2.2"], 3)).await;
        assert_eq!(r.silent, 1);
        assert_eq!(r.exit_code(), exit::EXIT_NO_REPLY);
        assert_eq!(of_type(&lines, "summary").len(), 2);
        assert_eq!(of_type(&lines, "reply").len(), 3);
    }

    #[test]
    fn exit_codes_rank_unresolved_first() {
        let r = RunResult {
            unresolved: 1,
            silent: 1,
            addresses: 1,
        };
        assert_eq!(r.exit_code(), exit::EXIT_UNRESOLVED);
        assert_eq!(RunResult::default().exit_code(), exit::EXIT_OK);
    }
}
