//! Command-line definitions (clap derive, exporter-style dotted flags) and exit codes.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::exit::{
    EXIT_FAILURE, EXIT_NO_REPLY, EXIT_NOPERM, EXIT_OK, EXIT_UNRESOLVED, EXIT_USAGE,
};
use crate::resolve::Family;

const EXIT_HELP: &str = "Exit status: 0 every host answered, 1 some host never answered, \
2 some host could not be resolved, 64 bad arguments, 77 no permission to open ICMP sockets.";

/// pingscope: ICMP reachability, RTT, loss and jitter for the Prometheus world.
#[derive(Debug, Parser)]
#[command(name = "pingscope", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ping hosts and stream one JSON line per probe, then a summary per host.
    #[command(after_help = EXIT_HELP)]
    Ping(PingArgs),
    /// Run the exporter daemon: monitors, /metrics, /probe, REST + WebSocket API, live page.
    Serve(Box<ServeArgs>),
    /// Validate a config file; print every error with its line; exit 64 when invalid.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
}

/// Output format of `ping`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (default when stdout is not a terminal).
    Json,
    /// Human text like iputils ping (default on a terminal).
    Text,
}

/// Flags of `pingscope ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Hosts to ping (names or addresses), concurrently.
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Stop after COUNT probes per address (default: until interrupted or the deadline).
    #[arg(short = 'c', long, value_parser = parse_count)]
    pub count: Option<u64>,
    /// Time between probes to one address (`200ms`, `1s`, or plain seconds `0.2`).
    #[arg(short = 'i', long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop sending after this long in total.
    #[arg(short = 'w', long, value_parser = parse_positive_duration)]
    pub deadline: Option<Duration>,
    /// How long to wait for each reply; a reply after it is reported `late`.
    #[arg(short = 'W', long, default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// ICMP payload bytes.
    #[arg(short = 's', long, default_value_t = 56, value_parser = parse_size)]
    pub size: u32,
    /// IPv4 TTL / IPv6 hop limit (1-255).
    #[arg(short = 't', long, value_parser = parse_ttl)]
    pub ttl: Option<u8>,
    /// TOS byte / IPv6 traffic class (0-255, decimal or 0x hex).
    #[arg(short = 'Q', long, value_parser = parse_tos)]
    pub tos: Option<u8>,
    /// Send through this interface (SO_BINDTODEVICE).
    #[arg(short = 'I', long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Source address.
    #[arg(short = 'S', long, value_name = "ADDR")]
    pub source: Option<IpAddr>,
    /// IPv4 only.
    #[arg(short = '4', conflicts_with_all = ["ip6", "all_addresses"])]
    pub ip4: bool,
    /// IPv6 only.
    #[arg(short = '6', conflicts_with = "all_addresses")]
    pub ip6: bool,
    /// Ping every address each host resolves to.
    #[arg(long)]
    pub all_addresses: bool,
    /// DNS server to ask instead of the system resolver (`IP` or `IP:PORT`).
    #[arg(long, value_name = "ADDR", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,
    /// Output format (default: json unless stdout is a terminal).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl PingArgs {
    /// The address family the flags select.
    pub fn family(&self) -> Family {
        if self.all_addresses {
            Family::All
        } else if self.ip4 {
            Family::Ip4
        } else if self.ip6 {
            Family::Ip6
        } else {
            Family::Auto
        }
    }

    /// Checks what single flags cannot: the payload size against the protocol maximum.
    pub fn validate(&self) -> Result<(), String> {
        let max = if self.ip6 {
            MAX_PAYLOAD_V6
        } else {
            MAX_PAYLOAD_V4
        };
        if self.size > max {
            return Err(format!(
                "invalid size {}: above the protocol maximum of {max} bytes{}",
                self.size,
                if self.ip6 {
                    " for IPv6"
                } else {
                    " for IPv4 (use -6 for up to 65527)"
                }
            ));
        }
        Ok(())
    }
}

/// Largest ICMPv4 echo payload: 65535 − 20 (IP header) − 8 (ICMP header).
pub const MAX_PAYLOAD_V4: u32 = 65_507;
/// Largest ICMPv6 echo payload: 65535 − 8 (ICMPv6 header); the IPv6 header is not counted.
pub const MAX_PAYLOAD_V6: u32 = 65_527;
/// Smallest interval between probes to one address.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

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
    /// Keep only the targets whose name hashes to shard I of N (`I/N`, I from 0).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
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

/// Parses a duration given on the command line: Prometheus style (`200ms`, `1m30s`) or plain
/// seconds as iputils ping takes them (`0.2`).
pub fn parse_cli_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("invalid duration \"{s}\": must not be negative"));
    }
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return match t.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("invalid duration \"{s}\": out of range")),
            _ => Err(format!("invalid duration \"{s}\"")),
        };
    }
    crate::config::parse_duration(t).map_err(|e| e.to_string())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_cli_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration \"{s}\": must be greater than 0"));
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_cli_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "invalid interval \"{s}\": below the minimum of 1ms"
        ));
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(s)?;
    if d > Duration::from_secs(60) {
        return Err(format!("invalid timeout \"{s}\": above the maximum of 1m"));
    }
    Ok(d)
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("invalid count 0: must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("invalid count \"{s}\": not a whole number")),
    }
}

fn parse_size(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n <= MAX_PAYLOAD_V6 => Ok(n),
        Ok(n) => Err(format!(
            "invalid size {n}: above the protocol maximum of {MAX_PAYLOAD_V6} bytes"
        )),
        Err(_) => Err(format!("invalid size \"{s}\": not a whole number of bytes")),
    }
}

fn parse_ttl(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u32>() {
        Ok(n @ 1..=255) => Ok(n as u8),
        Ok(n) => Err(format!("invalid ttl {n}: must be between 1 and 255")),
        Err(_) => Err(format!("invalid ttl \"{s}\": not a whole number")),
    }
}

fn parse_tos(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    match parsed {
        Ok(n @ 0..=255) => Ok(n as u8),
        Ok(n) => Err(format!("invalid tos {n}: must be between 0 and 255")),
        Err(_) => Err(format!("invalid tos \"{s}\": not a number")),
    }
}

fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid DNS server \"{s}\": expected IP or IP:PORT"))
}

/// Entry point of the binary: parse, dispatch, map errors to exit codes.
pub fn main() -> ExitCode {
    ExitCode::from(run(std::env::args_os()))
}

/// Runs the CLI with these arguments and returns the exit status.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => EXIT_OK,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Ping(args) => crate::ping::main(args),
        Command::Serve(args) => crate::app::main(*args),
        Command::CheckConfig { file } => crate::app::check_config(&file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_durations() {
        assert_eq!(parse_cli_duration("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_cli_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_cli_duration("-1s").is_err());
        assert!(parse_interval("0.0001").is_err());
        assert!(parse_timeout("0").is_err());
    }

    #[test]
    fn numeric_flags() {
        assert_eq!(parse_tos("0x10"), Ok(16));
        assert!(parse_tos("256").is_err());
        assert!(parse_ttl("0").is_err());
        assert_eq!(parse_ttl("255"), Ok(255));
        assert!(parse_count("0").is_err());
        assert_eq!(
            parse_dns_server("127.0.0.1"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 53)))
        );
        assert_eq!(
            parse_dns_server("[::1]:5353"),
            Ok(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 5353)))
        );
    }
}
