//! `pingscope-testnet`: the simulated network the integration tests ping through.
//!
//! Run inside a network namespace of its own (`ip netns exec NS pingscope-testnet ...`). It creates
//! a TUN device, gives it 198.18.0.1/15 and 2001:db8::1/32, routes those ranges into it, and answers
//! every echo request, UDP datagram and TCP segment there per the profile file: delay, jitter, loss,
//! duplicates, TTL, ICMP errors, blackhole, ports, and a path of hops in front of the destination
//! (SIGHUP re-reads the profile file). It logs each packet as a JSON line and measures its own
//! send-time error.
//! See docs/testnet.md.

mod logline;
mod packet;
mod path;
mod profile;
mod responder;
mod tap;
mod tcp;
mod tun;
mod udp;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Answer ICMP echo, UDP and TCP in 198.18.0.0/15 and 2001:db8::/32 inside this network namespace.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Profile file (JSON, or YAML when it ends in .yml/.yaml).
    #[arg(long)]
    profiles: PathBuf,
    /// JSON-lines log, one line per packet received.
    #[arg(long)]
    log: PathBuf,
    /// Timing reports (JSON lines) are appended here on SIGUSR1 and at exit.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// TUN device name.
    #[arg(long, default_value = "tn0")]
    device: String,
    /// Stay in the normal scheduling class instead of SCHED_FIFO.
    #[arg(long)]
    no_realtime: bool,
}

/// Real-time priority: on a loaded machine (parallel builds) a normal task can wait tens of
/// milliseconds for a CPU, which would show up as network delay the profile never asked for.
/// The loop blocks in `poll` between packets, and the kernel's RT throttling caps any runaway.
fn go_realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler on this process with a valid, fully initialised sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "staying in the normal scheduling class");
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "pingscope-testnet failed");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // First, before anything touches the network: a namespace with other interfaces is refused.
    tun::check_isolated(&args.device)?;
    let profiles = profile::Profiles::load(&args.profiles)?;
    if !args.no_realtime {
        go_realtime();
    }
    // Signals are blocked before anything else so a SIGTERM during set-up is not lost.
    let signals = responder::Responder::signals()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| anyhow::anyhow!("opening log {}: {e}", args.log.display()))?;
    let device = tun::create(&args.device)?;
    tun::configure(&args.device)?;
    let tap = match tap::Tap::open(&args.device) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "no kernel timestamps: delays count from the read time");
            None
        }
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "READY")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(device = %args.device, "answering echo");
    let mut r = responder::Responder::new(device, tap, profiles, log, args.stats.clone())
        .reload_from(args.profiles.clone());
    r.run(&signals)?;
    Ok(())
}
