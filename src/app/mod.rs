//! Wiring for `pingscope serve`: build the engine and the [`App`] state, start the HTTP servers,
//! then wait for reload and shutdown signals (SIGHUP, `--config.watch`, SIGTERM/SIGINT). Also
//! logging setup, `check-config` and the allocator tuning of the daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::engine::Engine;
use crate::engine::icmp::EngineConfig;
use crate::exit;
use crate::http::serve::{Limits, ServeOptions};
use crate::http::webconfig::{WebConfig, WebConfigError};
use crate::state::{App, AppOptions};

mod args;

pub use args::{LogFormat, ServeArgs};

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// How often `--config.watch` looks at the config and target files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Sets up logging for the daemon.
pub fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log.level \"{level}\""))?;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init()
            .map_err(|e| e.to_string()),
        // `ts=… level=info target=… msg="…" key=value`, as Prometheus' own exporters log.
        LogFormat::Logfmt => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_logfmt::builder()
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .map_err(|e| e.to_string()),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// `pingscope check-config FILE`.
pub fn check_config(file: &Path) -> u8 {
    let (ok, report) = config::check_config_report(file);
    if ok {
        print_line(&report);
        exit::EXIT_OK
    } else {
        eprint_line(&report);
        exit::EXIT_USAGE
    }
}

fn print_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{s}");
}

fn eprint_line(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{s}");
}

/// `pingscope serve`: returns the exit status.
pub fn main(args: ServeArgs) -> u8 {
    tune_allocator();
    if let Err(e) = init_logging(&args.log_level, args.log_format) {
        eprint_line(&format!("pingscope: {e:#}"));
        return exit::EXIT_USAGE;
    }
    let shard = match config::shard_auto::resolve_shard(
        args.shard.as_deref(),
        args.shard_count.as_deref(),
        crate::mesh::hostname,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprint_line(&format!("pingscope: invalid --shard: {e}"));
            return exit::EXIT_USAGE;
        }
    };
    if !args.telemetry_path.starts_with('/') || args.telemetry_path.len() < 2 {
        eprint_line("pingscope: --web.telemetry-path must start with / and name a path");
        return exit::EXIT_USAGE;
    }
    let config = match &args.config_file {
        Some(path) => match config::load_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprint_line(&format!("pingscope: invalid config:\n{e}"));
                return exit::EXIT_USAGE;
            }
        },
        None => Config::embedded_default(),
    };
    let serve_options = match serve_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprint_line(&format!("pingscope: invalid --web.config.file: {e}"));
            return exit::EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pingscope")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprint_line(&format!("pingscope: cannot start the runtime: {e}"));
            return exit::EXIT_FAILURE;
        }
    };
    let options = AppOptions {
        config_path: args.config_file.clone(),
        telemetry_path: args.telemetry_path.clone(),
        shard,
        max_probes: args.max_probes,
        max_ws_clients: args.max_ws_clients,
    };
    let code = runtime.block_on(run(
        options,
        config,
        (args.listen.clone(), args.udp_echo.clone()),
        args.config_watch,
        serve_options,
    ));
    // Tasks still running after the grace period must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// The web config (validated now) and the limits from the flags.
fn serve_options(args: &ServeArgs) -> Result<ServeOptions, WebConfigError> {
    let web_config = args
        .web_config_file
        .as_deref()
        .map(WebConfig::open)
        .transpose()?;
    Ok(ServeOptions {
        web_config,
        health_without_auth: args.health_without_auth,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.request_timeout,
            max_connections: args.max_connections,
        },
    })
}

async fn run(
    options: AppOptions,
    config: Config,
    (listen, udp_echo): (Vec<SocketAddr>, Vec<SocketAddr>),
    watch: bool,
    serve_options: ServeOptions,
) -> u8 {
    // ICMP and path monitors need their permission at start; a daemon that monitors only TCP and UDP
    // runs as any user, its ICMP sessions failing to send (with the permission's fix named).
    let needs_icmp = config.targets.is_empty()
        || config.mesh.is_some()
        || config.targets.iter().any(|t| t.options.kind.uses_icmp());
    let engine = if needs_icmp {
        Engine::new(EngineConfig::default())
    } else {
        Engine::lazy(EngineConfig::default())
    };
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot open ICMP sockets");
            eprint_line(&format!("pingscope: {e}"));
            return match e {
                crate::engine::SocketError::PermissionDenied { .. } => exit::EXIT_NOPERM,
                _ => exit::EXIT_FAILURE,
            };
        }
    };
    let mut listeners = Vec::new();
    for addr in &listen {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(address = %addr, "listening");
                listeners.push(l);
            }
            Err(e) => {
                eprint_line(&format!("pingscope: cannot listen on {addr}: {e}"));
                return exit::EXIT_FAILURE;
            }
        }
    }
    let echo_shutdown = CancellationToken::new();
    for addr in &udp_echo {
        match crate::udp_echo::bind(*addr).await {
            Ok(socket) => {
                tracing::info!(address = %addr, "answering UDP echo probes");
                let counters = Default::default();
                tokio::spawn(crate::udp_echo::serve(
                    socket,
                    counters,
                    echo_shutdown.clone(),
                ));
            }
            Err(e) => {
                eprint_line(&format!(
                    "pingscope: cannot listen for UDP echo on {addr}: {e}"
                ));
                return exit::EXIT_FAILURE;
            }
        }
    }
    let app = match App::start(options, config, engine).await {
        Ok(app) => app,
        Err(e) => {
            eprint_line(&format!("pingscope: {e:#}"));
            return exit::EXIT_FAILURE;
        }
    };
    let http_shutdown = CancellationToken::new();
    let router = crate::http::serve::layered(crate::http::router(app.clone()), &serve_options);
    crate::state::release_free_heap();
    let server = tokio::spawn(crate::http::serve::serve_with(
        listeners,
        router,
        http_shutdown.clone(),
        SHUTDOWN_GRACE,
        serve_options,
    ));
    if watch {
        tokio::spawn(watch_config(app.clone()));
    }
    wait_for_signals(&app).await;
    tracing::info!("shutting down");
    let bounded = async {
        app.shutdown().await;
        echo_shutdown.cancel();
        http_shutdown.cancel();
        let _ = server.await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, bounded).await.is_err() {
        tracing::warn!("shutdown grace period over; exiting");
    }
    exit::EXIT_OK
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn wait_for_signals(app: &App) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {
                let app = app.clone();
                // A reload waits for the previous one; signals keep being read meanwhile.
                tokio::spawn(async move { let _ = app.reload().await; });
            }
            Some(()) = term.recv() => return,
            Some(()) = int.recv() => return,
        }
    }
}

/// Reloads when the config file or a target file changes (polling: works with the symlink
/// swaps of Kubernetes ConfigMaps, where inotify on the file misses the change).
async fn watch_config(app: App) {
    let mut last = fingerprint(&app.config().watch_paths());
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutdown_token().cancelled() => return,
        }
        let now = fingerprint(&app.config().watch_paths());
        if now != last {
            last = now;
            tracing::info!("config or target files changed; reloading");
            let _ = app.reload().await;
        }
    }
}

fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    for p in paths {
        let entries: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        } else {
            vec![p.clone()]
        };
        for e in entries {
            let meta = std::fs::metadata(&e).ok();
            out.push((
                e,
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            ));
        }
    }
    out.sort();
    out
}

/// Serves large blocks (1 MiB and up) with their own mappings, always, and keeps the heap in
/// two arenas unless the environment chose otherwise.
///
/// glibc raises its mmap threshold each time it frees a mapped block, up to 32 MiB, and keeps
/// up to twice that free in the heap before trimming. A `/metrics` body at 10,000 targets grows
/// through 16 and 32 MiB buffers, so after the first scrape every later buffer below 32 MiB came
/// from the heap and stayed there once freed: 13 MiB more resident at 10,000 targets, for good. Fixing the
/// threshold turns that adjustment off; a block this large costs one mmap/munmap pair, which is
/// nothing beside filling it.
///
/// glibc also gives every thread that allocates an arena of its own, up to eight per core, each
/// with its own free lists and slack before it trims. The daemon's state is allocated once per
/// address and its probe path allocates next to nothing (the per-thread cache serves it), so
/// more arenas only spread that state and its slack: at 10,000 addresses, capping them at two
/// (the main thread's and one the other threads share) keeps about 1 MB less resident
/// (bench/RESULTS.md). `MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`, wins.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 1 << 20;
        const ARENAS: libc::c_int = 2;
        let chosen = arenas_chosen(
            std::env::var_os("MALLOC_ARENA_MAX").is_some(),
            std::env::var("GLIBC_TUNABLES").ok().as_deref(),
        );
        // SAFETY: mallopt only sets glibc's own tunables, under its own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            if !chosen {
                libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            }
        }
    }
}

/// Whether the environment sets glibc's arena count: `MALLOC_ARENA_MAX`, or
/// `glibc.malloc.arena_max` among the `GLIBC_TUNABLES`.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn arenas_chosen(malloc_arena_max: bool, tunables: Option<&str>) -> bool {
    malloc_arena_max
        || tunables.is_some_and(|t| {
            t.split(':')
                .any(|kv| kv.split('=').next() == Some("glibc.malloc.arena_max"))
        })
}

#[cfg(test)]
mod tests {
    use super::arenas_chosen;

    #[test]
    fn the_environment_chooses_the_arena_count_only_when_it_names_it() {
        assert!(!arenas_chosen(false, None));
        assert!(arenas_chosen(true, None));
        assert!(arenas_chosen(false, Some("glibc.malloc.arena_max=4")));
        assert!(arenas_chosen(
            false,
            Some("glibc.cpu.hwcaps=-AVX2:glibc.malloc.arena_max=1")
        ));
        assert!(!arenas_chosen(false, Some("glibc.malloc.trim_threshold=0")));
        assert!(!arenas_chosen(false, Some("glibc.malloc.arena_test=2")));
    }
}
