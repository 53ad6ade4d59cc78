//! Measures what kernel timestamps buy: loopback RTT with the kernel's RX and TX timestamps
//! (SO_TIMESTAMPING) against user-space ones (read before `sendto` and when the receive task
//! reads the reply), on an idle runtime and on one whose only thread is kept busy by a task
//! spinning in 2 ms slices.
//!
//! `cargo run --example rtt_timestamps [-- PROBES]` (root or ping_group_range; 127.0.0.1 only).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pingscope::engine::icmp::{EngineConfig, IcmpEngine, TimestampSource};
use pingscope::engine::{EventKind, Pinger, ProbeSpec, SocketOptions, Transport};

const SLICE: Duration = Duration::from_millis(2);

async fn run(source: TimestampSource, load: bool, probes: u32) -> Result<Vec<Duration>, String> {
    let engine = IcmpEngine::new(EngineConfig {
        timestamps: source,
        ..EngineConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    if load {
        let stop = stop.clone();
        tokio::spawn(async move {
            // Bounded by `stop` and by a hard cap of 60 s.
            let cap = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
                let until = Instant::now() + SLICE;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<pingscope::engine::ProbeEvent>(1024);
    let tx = pingscope::engine::EventSink::from(tx);
    let spec = ProbeSpec {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        transport: Transport::Icmp,
        size: 56,
        timeout: Duration::from_secs(1),
        options: SocketOptions::default(),
    };
    let mut rtts = Vec::new();
    for tag in 0..u64::from(probes) {
        engine.send(&spec, tag, &tx).map_err(|e| e.to_string())?;
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
            && let EventKind::Reply(r) = ev.kind
        {
            rtts.push(r.rtt);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    rtts.sort();
    Ok(rtts)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> ExitCode {
    let probes: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt.inspect_err(|e| eprintln!("runtime: {e}")) else {
        return ExitCode::from(1);
    };
    println!(
        "{:<10} {:<5} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "timestamp", "load", "n", "p50_us", "mean_us", "p99_us", "max_us"
    );
    for load in [false, true] {
        for source in [TimestampSource::Kernel, TimestampSource::Userspace] {
            match rt.block_on(run(source, load, probes)) {
                Ok(r) if !r.is_empty() => {
                    let mean = r.iter().map(|d| micros(*d)).sum::<f64>() / r.len() as f64;
                    let pct = |p: f64| micros(r[((r.len() - 1) as f64 * p) as usize]);
                    println!(
                        "{:<10} {:<5} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                        format!("{source:?}").to_lowercase(),
                        if load { "busy" } else { "idle" },
                        r.len(),
                        pct(0.5),
                        mean,
                        pct(0.99),
                        pct(1.0)
                    );
                }
                Ok(_) => println!("{source:?} load={load}: no replies"),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            }
        }
    }
    ExitCode::SUCCESS
}
