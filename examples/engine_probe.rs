//! A small driver for the ICMP engine, used by `tests/engine_loopback.rs` to run probes in a
//! private network namespace as an unprivileged user, plus a delaying echo responder.
//!
//! `engine_probe probe [--socket auto|dgram|raw] [--count N] [--timeout-ms T] ADDR...` prints the
//! socket kinds, then one `event ...` line per engine event, then `done`.
//!
//! `engine_probe respond --delay-ms D --copies C --for-ms F` answers echo requests to 127.0.0.1
//! from a raw socket, each D ms late and C times, for F ms (run it where the kernel's own echo
//! is off: `net.ipv4.icmp_echo_ignore_all=1`). Loopback only.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use pingscope::engine::icmp::{EngineConfig, IcmpEngine, SocketPreference};
use pingscope::engine::packet::{self, Icmp};
use pingscope::engine::{
    EventKind, Pinger, ProbeSpec, ReplyInfo, SocketError, SocketOptions, Transport,
};
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Auto,
    Dgram,
    Raw,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ping addresses through the engine.
    Probe {
        #[arg(long, value_enum, default_value = "auto")]
        socket: Kind,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 56)]
        size: u16,
        /// Extra time to wait for late and duplicate replies after the last deadline.
        #[arg(long, default_value_t = 0)]
        linger_ms: u64,
        /// Also probe this many addresses 127.0.x.y (x from 1, y in 1..=250).
        #[arg(long, default_value_t = 0)]
        loopback_range: u32,
        addrs: Vec<IpAddr>,
    },
    /// Answer echo requests to 127.0.0.1 late and repeatedly (raw socket, root).
    Respond {
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 1)]
        copies: u32,
        #[arg(long, default_value_t = 3000)]
        for_ms: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.cmd {
        Cmd::Probe {
            socket,
            count,
            timeout_ms,
            size,
            linger_ms,
            loopback_range,
            mut addrs,
        } => {
            addrs.extend((0..loopback_range.min(250 * 250)).map(|i| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    (i / 250) as u8 + 1,
                    (i % 250) as u8 + 1,
                ))
            }));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build();
            let Ok(rt) = rt.inspect_err(|e| eprintln!("runtime: {e}")) else {
                return ExitCode::from(1);
            };
            rt.block_on(probe(
                socket,
                count,
                Duration::from_millis(timeout_ms),
                size,
                linger_ms,
                addrs,
            ))
        }
        Cmd::Respond {
            delay_ms,
            copies,
            for_ms,
        } => match respond(delay_ms, copies, for_ms) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("respond: {e}");
                ExitCode::from(1)
            }
        },
    }
}

async fn probe(
    kind: Kind,
    count: u32,
    timeout: Duration,
    size: u16,
    linger_ms: u64,
    addrs: Vec<IpAddr>,
) -> ExitCode {
    let socket = match kind {
        Kind::Auto => SocketPreference::Auto,
        Kind::Dgram => SocketPreference::Dgram,
        Kind::Raw => SocketPreference::Raw,
    };
    let engine = match IcmpEngine::new(EngineConfig {
        socket,
        ..EngineConfig::default()
    }) {
        Ok(e) => e,
        Err(e @ SocketError::PermissionDenied { .. }) => {
            eprintln!("{e}");
            return ExitCode::from(77);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<pingscope::engine::ProbeEvent>(4096);
    let tx = pingscope::engine::EventSink::from(tx);
    let mut tag = 0u64;
    for _ in 0..count {
        for ip in &addrs {
            let spec = ProbeSpec {
                ip: *ip,
                transport: Transport::Icmp,
                size,
                timeout,
                options: SocketOptions::default(),
            };
            match engine.send(&spec, tag, &tx) {
                Ok(_) => tag += 1,
                Err(e) => println!("send_error ip={ip} reason={} error={e}", e.reason()),
            }
        }
    }
    for (v6, _, kind, ident) in engine.sockets() {
        println!(
            "socket family={} kind={} ident={ident}",
            if v6 { "ip6" } else { "ip4" },
            kind.as_str()
        );
    }
    let until =
        Instant::now() + timeout + Duration::from_millis(linger_ms) + Duration::from_millis(200);
    let mut terminal = 0u64;
    while Instant::now() < until && (terminal < tag || linger_ms > 0) {
        let Ok(Some(ev)) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await
        else {
            break;
        };
        terminal += u64::from(ev.kind.is_terminal());
        let rtt_us = |r: &ReplyInfo| format!("rtt_us={}", r.rtt.as_micros());
        let (kind, detail) = match &ev.kind {
            EventKind::Reply(r) => (
                "reply",
                format!("{} ttl={:?} size={}", rtt_us(r), r.ttl, r.size),
            ),
            EventKind::Late(r) => ("late", rtt_us(r)),
            EventKind::Duplicate(r) => ("duplicate", rtt_us(r)),
            EventKind::Timeout => ("timeout", String::new()),
            EventKind::IcmpError(e) => (
                "error",
                format!(
                    "class={} icmp_type={} icmp_code={} from={}",
                    e.kind.as_str(),
                    e.icmp_type,
                    e.icmp_code,
                    e.from
                ),
            ),
        };
        println!(
            "event kind={kind} ip={} tag={} seq={} {detail}",
            ev.ip, ev.tag, ev.seq
        );
    }
    println!(
        "done sent={tag} terminal={terminal} in_flight={} counters={:?}",
        engine.in_flight(),
        engine.counters()
    );
    ExitCode::SUCCESS
}

fn respond(delay_ms: u64, copies: u32, for_ms: u64) -> std::io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let end = Instant::now() + Duration::from_millis(for_ms);
    let mut pending: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            // SAFETY: `recv_from` initialised the first `n` bytes.
            let data: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            if let Ok((ip, Icmp::EchoRequest(echo))) = packet::parse_ipv4_packet(&data)
                && ip.dst == Ipv4Addr::LOCALHOST
            {
                let mut reply = packet::build_echo_request(false, echo.ident, echo.seq, 0, 0);
                reply.extend_from_slice(echo.payload);
                reply[0] = 0;
                reply[2] = 0;
                reply[3] = 0;
                let sum = packet::checksum(&reply);
                reply[2..4].copy_from_slice(&sum.to_be_bytes());
                pending.push((Instant::now() + Duration::from_millis(delay_ms), reply));
            }
        }
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _)| *at <= now);
        pending = rest;
        for (_, reply) in due {
            let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
            for _ in 0..copies {
                sock.send_to(&reply, &to.into())?;
            }
        }
    }
    Ok(())
}
