//! pingscope: an ICMP ping monitor for the Prometheus world.
//!
//! Map of the modules, from the bottom up. A module imports only modules above it in this table
//! and never one of the top layer (`cli`, `app`, `http`); `tests/architecture.rs` reads every
//! `use crate::` of `src/` and fails on an arrow this map forbids.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | leaf | [`engine`] | the probe layer behind [`engine::Pinger`]: ICMP (one socket per family, in-flight table, kernel timestamps), TCP and UDP (a socket per probe), Paris flows for path tracing (ICMP and UDP: a socket per flow); a scripted fake. Imports nothing of the crate |
//! | leaf | [`stats`] | pure statistics: loss, RTT summary, percentiles, jitter (IPDV and RFC 3550). Imports nothing of the crate |
//! | leaf | [`resolve`] | DNS per address family, with record TTLs, against the system or a chosen server. Imports nothing of the crate |
//! | leaf | [`exit`] | the exit statuses of every command. Imports nothing of the crate |
//! | leaf | [`duration`] | Prometheus-style durations, one spelling for config, CLI and HTTP. Imports nothing of the crate |
//! | domain | [`udp_echo`] | the UDP echo responder of `serve --udp-echo.listen-address`: answers probe datagrams only, rate-limited |
//! | domain | [`config`] | YAML → raw serde structs → defaults → validation (every error at once) → [`config::Config`]; diff for reload |
//! | domain | [`sample`] | the one sample shape shared by CLI JSON lines, WebSocket messages and the session store |
//! | domain | [`metrics`] | the Prometheus registry: record a result, forget a target, encode text or protobuf; `events`: each failure logged and counted by one function |
//! | domain | `live` | broadcast hub for live samples; slow readers lag, the engine never waits |
//! | domain | [`probe`] | one request type with a kind, one rule set with one message per rule, one runner for every front (CLI, `/probe`, sessions, monitors) |
//! | domain | [`ping`] | the one-shot `pingscope ping` command |
//! | domain | [`trace`] | the one-shot `pingscope trace` command: mtr-style path rounds (ICMP echo or UDP) through [`probe::path`] |
//! | domain | [`mesh`] | mesh mode at run time: members by DNS or static list, this instance among them, the ring's peers as monitors with a `source` label |
//! | domain | `scheduler` | the monitors: handle and reload diff, address resolution, tick loop, recorder (events recorded inline from the engine) |
//! | domain | [`session`] | on-demand sessions: manager and SQLite store |
//! | state | [`state`] | [`state::App`], the daemon's cheap-clone handle: config in force, scheduler, registry, engine, sessions; typed reload outcomes |
//! | top | [`http`] | `router(state)`: `/metrics`, `/probe`, `/api/v1`, WebSocket, admin, UI. Imports `state`, never `app` |
//! | top | [`app`] | wiring of `serve` and its flags: engine, listeners, signals, config watch, logging, `check-config`; the only importer of `http` |
//! | top | [`cli`] | clap definitions of the commands and of `ping`'s flags; `main.rs` dispatches; no module imports it |
//!
//! These are developer docs: build them with `cargo doc --document-private-items`, where the
//! module pages' links to private items resolve (`scripts/test` checks that every link does).
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod cli;
pub mod config;
pub mod duration;
pub mod engine;
pub mod exit;
pub mod http;
pub(crate) mod live;
pub mod mesh;
pub mod metrics;
pub mod ping;
pub mod probe;
pub mod resolve;
pub mod sample;
pub(crate) mod scheduler;
pub mod session;
pub mod state;
pub mod stats;
pub mod trace;
pub mod udp_echo;

/// Default TCP port of the HTTP server (9115, 9374 and 9427 belong to the peers).
pub const DEFAULT_PORT: u16 = 10060;
