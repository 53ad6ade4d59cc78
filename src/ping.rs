//! `pingscope ping`: ping hosts concurrently, stream one line per probe outcome, then a summary
//! per address.
//!
//! Each resolved address gets its own task with its own sink; the engine is shared. Lines are
//! written whole under the output lock and flushed as they happen, so a reader of the pipe sees
//! each outcome at once.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cli::{self, Format, PingArgs};
use crate::engine::{Pinger, ProbeSpec, SocketOptions};
use crate::resolve::{Family, Resolver};
use crate::sample::{RttSummaryMs, Sample, SampleType, Summary, SummaryTag};
use crate::stats::Accumulator;

/// How long to keep listening for duplicates and late replies after the last probe settled.
pub const LINGER: Duration = Duration::from_millis(250);

/// Where lines go: stdout in the binary, a buffer in tests.
pub type Output = Arc<Mutex<dyn Write + Send>>;

/// What one run of `ping` asks for, after flag parsing.
#[derive(Clone, Debug)]
pub struct PingPlan {
    /// Hosts as typed.
    pub hosts: Vec<String>,
    /// Probes per address; `None` = until cancelled or the deadline.
    pub count: Option<u64>,
    /// Time between probes to one address.
    pub interval: Duration,
    /// Stop sending after this long.
    pub deadline: Option<Duration>,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Payload bytes.
    pub size: u16,
    /// Address family selection.
    pub family: Family,
    /// Socket options.
    pub options: SocketOptions,
    /// Output format.
    pub format: Format,
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
            cli::EXIT_UNRESOLVED
        } else if self.silent > 0 {
            cli::EXIT_NO_REPLY
        } else {
            cli::EXIT_OK
        }
    }
}

/// Entry point of the subcommand: build the runtime, engine and resolver, run, map to an exit code.
pub fn main(args: PingArgs) -> u8 {
    if let Err(msg) = args.validate() {
        eprintln_safe(&format!("pingscope: {msg}"));
        return cli::EXIT_USAGE;
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Text
    } else {
        Format::Json
    });
    let plan = PingPlan {
        family: args.family(),
        hosts: args.hosts,
        count: args.count,
        interval: args.interval,
        deadline: args.deadline,
        timeout: args.timeout,
        // validate() bounded it to the protocol maximum, which fits u16.
        size: u16::try_from(args.size).unwrap_or(u16::MAX),
        options: SocketOptions {
            ttl: args.ttl,
            tos: args.tos,
            source: args.source,
            interface: args.interface,
        },
        format,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln_safe(&format!("pingscope: cannot start the runtime: {e}"));
            return cli::EXIT_FAILURE;
        }
    };
    runtime.block_on(async move {
        let engine = match crate::engine::icmp::IcmpEngine::new(Default::default()) {
            Ok(e) => e,
            Err(e) => {
                eprintln_safe(&format!("pingscope: {e}"));
                return match e {
                    crate::engine::SocketError::PermissionDenied { .. } => cli::EXIT_NOPERM,
                    _ => cli::EXIT_FAILURE,
                };
            }
        };
        let resolver = match args.dns_server {
            Some(server) => Resolver::with_servers(&[server]),
            None => Resolver::system(),
        };
        let resolver = match resolver {
            Ok(r) => r,
            Err(e) => {
                eprintln_safe(&format!("pingscope: cannot set up DNS: {e}"));
                return cli::EXIT_FAILURE;
            }
        };
        let cancel = CancellationToken::new();
        spawn_signal_watch(cancel.clone());
        let out: Output = Arc::new(Mutex::new(std::io::stdout()));
        run(&plan, engine, &resolver, out, cancel).await.exit_code()
    })
}

fn eprintln_safe(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// First Ctrl-C / SIGTERM stops sending (summaries still print); a second one exits at once.
fn spawn_signal_watch(cancel: CancellationToken) {
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
                std::process::exit(i32::from(cli::EXIT_NO_REPLY));
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
    for (i, host) in plan.hosts.iter().enumerate() {
        let resolver = resolver.clone();
        let host = host.clone();
        let family = plan.family;
        lookups.spawn(async move { (i, resolver.lookup(&host, family).await) });
    }
    let mut resolved = Vec::new();
    let mut result = RunResult::default();
    while let Some(joined) = lookups.join_next().await {
        let Ok((i, lookup)) = joined else { continue };
        let host = &plan.hosts[i];
        match lookup {
            Ok(r) => resolved.extend(r.addrs.into_iter().map(|ip| (i, ip))),
            Err(e) => {
                result.unresolved += 1;
                let s = Sample::local_error(host, host, None, None, e.to_string());
                emit_sample(&out, plan.format, &s);
                emit_summary(
                    &out,
                    plan.format,
                    &summary(host, None, &Accumulator::new()),
                    None,
                );
            }
        }
    }
    resolved.sort();
    let deadline = plan.deadline.map(|d| Instant::now() + d);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ip) in resolved {
        let host = plan.hosts[i].clone();
        if plan.format == Format::Text {
            write_line(
                &out,
                &format!(
                    "PING {host} ({ip}) {}({}) bytes of data.",
                    plan.size,
                    usize::from(plan.size) + 8 + if ip.is_ipv4() { 20 } else { 40 }
                ),
            );
        }
        let ctx = AddressRun {
            plan: plan.clone(),
            host,
            ip,
            pinger: pinger.clone(),
            out: out.clone(),
            cancel: cancel.clone(),
            deadline,
        };
        tasks.spawn(ctx.run());
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

struct AddressRun {
    plan: PingPlan,
    host: String,
    ip: IpAddr,
    pinger: Arc<dyn Pinger>,
    out: Output,
    cancel: CancellationToken,
    deadline: Option<Instant>,
}

impl AddressRun {
    async fn run(self) -> Accumulator {
        let started = Instant::now();
        // Sized for every probe that can be outstanding, plus late and duplicate replies.
        let per_timeout = self.plan.timeout.as_secs_f64() / self.plan.interval.as_secs_f64();
        let cap = (per_timeout.ceil() as usize)
            .saturating_mul(4)
            .clamp(64, 65_536);
        let (tx, mut rx) = mpsc::channel::<crate::engine::ProbeEvent>(cap);
        let tx = crate::engine::EventSink::from(tx);
        let spec = ProbeSpec {
            ip: self.ip,
            size: self.plan.size,
            timeout: self.plan.timeout,
            options: self.plan.options.clone(),
        };
        let mut acc = Accumulator::new();
        let mut ticker = tokio::time::interval(self.plan.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_seq: u64 = 1;
        let mut outstanding: u64 = 0;
        let mut sending = true;
        // If the engine ever lost an event, stop waiting this long after the last send.
        let mut drain_until = Instant::now() + self.plan.timeout + Duration::from_secs(1);
        let deadline = self.deadline;
        // Once every probe has settled, listen a little longer so duplicates and late replies
        // of the last probes are still counted.
        let mut linger_until: Option<Instant> = None;
        loop {
            if !sending && outstanding == 0 && linger_until.is_none() {
                linger_until = Some(Instant::now() + LINGER.min(self.plan.timeout));
            }
            tokio::select! {
                biased;
                Some(ev) = rx.recv() => {
                    if ev.kind.is_terminal() {
                        outstanding = outstanding.saturating_sub(1);
                    }
                    let sample = Sample::from_event(&self.host, &self.host, &ev);
                    acc.on_outcome(ev.tag, crate::burst::outcome(&ev.kind));
                    emit_sample(&self.out, self.plan.format, &sample);
                }
                _ = ticker.tick(), if sending => {
                    let seq = next_seq;
                    next_seq += 1;
                    match self.pinger.send(&spec, seq, &tx) {
                        Ok(_) => {
                            acc.on_sent();
                            outstanding += 1;
                        }
                        Err(e) => {
                            let s = Sample::local_error(&self.host, &self.host, Some(self.ip), Some(seq), e.to_string());
                            emit_sample(&self.out, self.plan.format, &s);
                        }
                    }
                    drain_until = Instant::now() + self.plan.timeout + Duration::from_secs(1);
                    if self.plan.count.is_some_and(|c| seq >= c) {
                        sending = false;
                    }
                }
                _ = self.cancel.cancelled(), if sending => sending = false,
                _ = sleep_until_opt(deadline), if sending => sending = false,
                _ = tokio::time::sleep_until(drain_until), if !sending => break,
                _ = sleep_until_opt(linger_until), if linger_until.is_some() => break,
            }
        }
        let elapsed = started.elapsed();
        emit_summary(
            &self.out,
            self.plan.format,
            &summary(&self.host, Some(self.ip), &acc),
            Some(elapsed),
        );
        acc
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Builds the summary line of one address from its accumulator.
pub fn summary(host: &str, ip: Option<IpAddr>, acc: &Accumulator) -> Summary {
    let t = acc.tally();
    let ms = crate::sample::secs_to_ms;
    let (ipdv, rfc) = acc.jitter();
    Summary {
        kind: SummaryTag::Summary,
        target: host.to_owned(),
        host: host.to_owned(),
        ip,
        sent: t.sent,
        received: t.received,
        lost: t.lost,
        loss_ratio: t.loss_ratio(),
        late: t.late,
        duplicates: t.duplicates,
        errors: t.errors,
        rtt_ms: acc.rtt().map(|r| RttSummaryMs {
            min: ms(r.min),
            avg: ms(r.mean),
            max: ms(r.max),
            stddev: ms(r.stddev),
            p50: ms(r.p50),
            p95: ms(r.p95),
            p99: ms(r.p99),
        }),
        jitter_ms: ipdv.map(ms),
        jitter_rfc3550_ms: rfc.map(ms),
    }
}

fn write_line(out: &Output, line: &str) {
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
        PingPlan {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            count: Some(count),
            interval: Duration::from_millis(100),
            deadline: None,
            timeout: Duration::from_millis(500),
            size: 56,
            family: Family::Auto,
            options: SocketOptions::default(),
            format: Format::Json,
        }
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
        assert_eq!(r.exit_code(), cli::EXIT_OK);
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
        assert_eq!(r.exit_code(), cli::EXIT_NO_REPLY);
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
        assert_eq!(r.exit_code(), cli::EXIT_UNRESOLVED);
        assert_eq!(RunResult::default().exit_code(), cli::EXIT_OK);
    }
}
