//! The flags of `pingscope serve` (exporter-style dotted flags), defined next to the wiring
//! they feed so that the wiring never imports the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs.
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Flags of `pingscope serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (YAML). Without it, an embedded default monitors 127.0.0.1 and ::1.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Address to listen on; repeat for several.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_values_t = default_listen())]
    pub listen: Vec<SocketAddr>,
    /// Answer pingscope's UDP echo probes on this address (`udp: {mode: echo}` of another
    /// instance); repeat for several. Only well-formed probe datagrams are answered,
    /// rate-limited, never with more bytes than they carry.
    #[arg(long = "udp-echo.listen-address", value_name = "ADDR")]
    pub udp_echo: Vec<SocketAddr>,
    /// Path of the metrics endpoint.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,
    /// Exporter-toolkit web config (TLS, basic auth, response headers); re-read on change.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Answer `/-/healthy` without basic auth (for load balancers and kubelets).
    #[arg(long = "web.health-without-auth")]
    pub health_without_auth: bool,
    /// Largest request body; larger ones get 413.
    #[arg(long = "web.max-request-body-bytes", value_name = "BYTES", default_value_t = crate::http::MAX_BODY_BYTES, value_parser = parse_positive)]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers, at least 8192); larger ones get 431.
    #[arg(long = "web.max-header-bytes", value_name = "BYTES", default_value_t = 16 * 1024, value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,
    /// Most headers in a request; more get 431.
    #[arg(long = "web.max-headers", value_name = "N", default_value_t = 64, value_parser = parse_positive)]
    pub max_headers: usize,
    /// Time a client has to send a request's headers (and finish a TLS handshake).
    #[arg(long = "web.header-read-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// Time a request may take before it is answered 503 (`/probe` and WebSockets excepted).
    #[arg(long = "web.request-timeout", value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 1024, value_parser = parse_positive)]
    pub max_connections: usize,
    /// `/probe` requests running at once; more get 429.
    #[arg(long = "web.max-probes", value_name = "N", default_value_t = crate::state::MAX_CONCURRENT_PROBES, value_parser = parse_positive)]
    pub max_probes: usize,
    /// WebSocket clients connected at once; more get 503.
    #[arg(long = "web.max-ws-clients", value_name = "N", default_value_t = crate::state::MAX_WS_CLIENTS, value_parser = parse_positive)]
    pub max_ws_clients: usize,
    /// Reload when the config or target files change.
    #[arg(long = "config.watch")]
    pub config_watch: bool,
    /// Log level: error, warn, info, debug, trace (or an EnvFilter directive).
    #[arg(long = "log.level", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,
    /// Keep only the targets whose name hashes to shard I of N (`I/N`, I from 0), or `auto`: I
    /// from the hostname's `-N` suffix (a StatefulSet pod), N from --shard.count.
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<String>,
    /// The shard count for `--shard auto` (the StatefulSet's replicas).
    #[arg(long = "shard.count", value_name = "N", env = crate::config::shard_auto::SHARD_COUNT_ENV)]
    pub shard_count: Option<String>,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid value \"{s}\": expected a whole number above 0"
        )),
    }
}

fn parse_header_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= crate::http::serve::MIN_HEADER_BYTES => Ok(n),
        _ => Err(format!(
            "invalid value \"{s}\": expected a number of bytes, at least {}",
            crate::http::serve::MIN_HEADER_BYTES
        )),
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], crate::DEFAULT_PORT))]
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = crate::probe::rules::parse_duration_of("duration", s, true)?;
    crate::probe::rules::positive("duration", d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_prometheus_style() {
        assert_eq!(
            parse_positive_duration("0.5"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_positive_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive("0").is_err());
        assert!(parse_header_bytes("100").is_err());
    }
}
