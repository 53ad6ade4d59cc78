//! pingscope: an ICMP ping monitor for the Prometheus world.
//!
//! Map of the modules, in the order data flows through them:
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | clap definitions for `ping`, `serve` and `check-config` (exporter-style dotted flags) |
//! | [`config`] | YAML → raw serde structs → defaults → validation (every error at once) → [`config::Config`]; diff for reload |
//! | [`resolve`] | DNS per address family, with record TTLs, against the system or a chosen server |
//! | [`engine`] | the ICMP layer behind [`engine::Pinger`]: one socket per family, in-flight table, kernel timestamps; a scripted fake |
//! | [`sample`] | the one sample shape shared by CLI JSON lines, WebSocket messages and the session store |
//! | [`stats`] | pure statistics: loss, RTT summary, percentiles, jitter (IPDV and RFC 3550) |
//! | [`burst`] | a bounded run of probes to one address, shared by `/probe` and sessions |
//! | [`ping`] | the one-shot `pingscope ping` command |
//! | [`metrics`] | the Prometheus registry: record a result, forget a target, encode text or protobuf |
//! | [`scheduler`] | one task per monitored address (events recorded inline from the engine): staggered start, drift-free ticks, lag measured |
//! | [`live`] | broadcast hub for live samples; slow readers lag, the engine never waits |
//! | [`session`] | on-demand sessions: manager and SQLite store |
//! | [`http`] | `router(state)`: `/metrics`, `/probe`, `/api/v1`, WebSocket, admin, UI |
//! | [`app`] | wiring for `serve`: handles, scheduler, HTTP, reload and shutdown |

pub mod app;
pub mod burst;
pub mod cli;
pub mod config;
pub mod engine;
pub mod http;
pub mod live;
pub mod metrics;
pub mod ping;
pub mod resolve;
pub mod sample;
pub mod scheduler;
pub mod session;
pub mod state;
pub mod stats;

/// Default TCP port of the HTTP server (9115, 9374 and 9427 belong to the peers).
pub const DEFAULT_PORT: u16 = 10060;
