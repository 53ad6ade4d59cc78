//! Command-line definitions (clap derive, exporter-style dotted flags) and exit codes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::ServeArgs;
use crate::ping::{Format, PingOptions};
use crate::probe::RawRequest;
use crate::probe::path::RawPath;
use crate::trace::TraceOptions;

const EXIT_HELP: &str = "Exit status: 0 every host answered, 1 some host never answered, \
2 some host could not be resolved, 64 bad arguments, 77 no permission to open ICMP sockets.";

const TRACE_EXIT_HELP: &str = "Exit status: 0 every destination answered, 1 some destination \
never answered, 2 some host could not be resolved, 64 bad arguments, 77 no permission to open \
ICMP sockets.";

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
    Ping(Box<PingArgs>),
    /// Trace the path to hosts, mtr-style: one JSON line per hop probe, then one `hop_summary`
    /// per (TTL, responder) and a `path` line (or the mtr table with `--format text`).
    #[command(after_help = TRACE_EXIT_HELP)]
    Trace(Box<TraceArgs>),
    /// Run the exporter daemon: monitors, /metrics, /probe, REST + WebSocket API, live page.
    Serve(Box<ServeArgs>),
    /// Validate a config file; print every error with its line; exit 64 when invalid.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
}

/// Flags of `pingscope ping`. Values are checked by the request's own rules
/// ([`crate::probe::validate`]), with the same messages as every other front.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Hosts to ping (names or addresses), concurrently.
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Stop after COUNT probes per address (default: until interrupted or the deadline).
    #[arg(short = 'c', long, allow_negative_numbers = true)]
    pub count: Option<String>,
    /// Time between probes to one address (`200ms`, `1s`, or plain seconds `0.2`) [default: 1s].
    #[arg(short = 'i', long)]
    pub interval: Option<String>,
    /// Stop sending after this long in total.
    #[arg(short = 'w', long)]
    pub deadline: Option<String>,
    /// How long to wait for each reply; a reply after it is reported `late` [default: 2s].
    #[arg(short = 'W', long)]
    pub timeout: Option<String>,
    /// ICMP payload bytes [default: 56].
    #[arg(short = 's', long, allow_negative_numbers = true)]
    pub size: Option<String>,
    /// IPv4 TTL / IPv6 hop limit (1-255).
    #[arg(short = 't', long, allow_negative_numbers = true)]
    pub ttl: Option<String>,
    /// TOS byte / IPv6 traffic class (0-255, decimal or 0x hex).
    #[arg(short = 'Q', long, allow_negative_numbers = true)]
    pub tos: Option<String>,
    /// Send through this interface (SO_BINDTODEVICE).
    #[arg(short = 'I', long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Source address.
    #[arg(short = 'S', long, value_name = "ADDR")]
    pub source: Option<String>,
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
    /// Probe this TCP port (one SYN per probe; SYN-ACK or RST is a reply) instead of ICMP echo.
    #[arg(
        long,
        value_name = "PORT",
        allow_negative_numbers = true,
        conflicts_with = "udp"
    )]
    pub tcp: Option<String>,
    /// Probe this UDP port instead of ICMP echo (see `--udp-mode`).
    #[arg(long, value_name = "PORT", allow_negative_numbers = true)]
    pub udp: Option<String>,
    /// What the UDP port is: `closed` (the port unreachable is the reply) or `echo` (a UDP
    /// echo service such as `pingscope serve --udp-echo.listen-address`) [default: closed].
    #[arg(long, value_name = "MODE")]
    pub udp_mode: Option<String>,
}

/// The request's `family` from the address flags (clap keeps them exclusive).
fn family(all: bool, ip4: bool, ip6: bool) -> &'static str {
    if all {
        "all"
    } else if ip4 {
        "ip4"
    } else if ip6 {
        "ip6"
    } else {
        "auto"
    }
}

impl PingArgs {
    /// What the flags ask for, in the request type every front shares (the host left out).
    pub fn into_options(self) -> PingOptions {
        let family = family(self.all_addresses, self.ip4, self.ip6);
        let kind = if self.tcp.is_some() {
            Some("tcp")
        } else if self.udp.is_some() {
            Some("udp")
        } else {
            None
        };
        PingOptions {
            request: RawRequest {
                target: None,
                kind: kind.map(str::to_owned),
                port: self.tcp.or(self.udp),
                udp_mode: self.udp_mode,
                count: self.count,
                duration: self.deadline,
                interval: self.interval,
                timeout: self.timeout,
                size: self.size,
                family: Some(family.to_owned()),
                ttl: self.ttl.map(|t| hex_or_decimal(&t)),
                tos: self.tos.map(|t| hex_or_decimal(&t)),
                source: self.source,
                interface: self.interface,
                plain_seconds: true,
            },
            hosts: self.hosts,
            dns_server: self.dns_server,
            format: self.format,
        }
    }
}

/// Flags of `pingscope trace`. Values are checked by the request's rules and the path rules
/// ([`crate::probe::validate`], [`crate::probe::path::validate_path`]), with the same messages as
/// every other front's.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Hosts to trace (names or addresses), concurrently; the first address of each.
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Stop after ROUNDS rounds (default: until interrupted).
    #[arg(
        short = 'c',
        long = "count",
        value_name = "ROUNDS",
        allow_negative_numbers = true
    )]
    pub count: Option<String>,
    /// Time between the starts of two rounds (`1s`, or plain seconds) [default: 1s].
    #[arg(short = 'i', long)]
    pub interval: Option<String>,
    /// Highest TTL probed (1-255) [default: 30].
    #[arg(long, allow_negative_numbers = true)]
    pub max_ttl: Option<String>,
    /// First TTL probed (1 to max-ttl) [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub first_ttl: Option<String>,
    /// Distinct Paris flows per round, to find ECMP branches (1-16) [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub flows: Option<String>,
    /// What is sent at each hop: icmp (echo) or udp (to closed port 33434) [default: icmp].
    #[arg(long)]
    pub protocol: Option<String>,
    /// Gap between two probes of a round (1ms-1s) [default: 10ms].
    #[arg(long)]
    pub pace: Option<String>,
    /// How long to wait for each hop's answer [default: 2s].
    #[arg(short = 'W', long)]
    pub timeout: Option<String>,
    /// Payload bytes (at least 14 for ICMP, 26 for UDP: the stamp and the flow's checksum word) [default: 56].
    #[arg(short = 's', long, allow_negative_numbers = true)]
    pub size: Option<String>,
    /// IPv4 only.
    #[arg(short = '4', conflicts_with = "ip6")]
    pub ip4: bool,
    /// IPv6 only.
    #[arg(short = '6')]
    pub ip6: bool,
    /// DNS server to ask instead of the system resolver (`IP` or `IP:PORT`).
    #[arg(long, value_name = "ADDR", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,
    /// Output format (default: json unless stdout is a terminal).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl TraceArgs {
    /// What the flags ask for: the request every front shares (host left out) and the path's.
    pub fn into_options(self) -> TraceOptions {
        let family = family(false, self.ip4, self.ip6);
        TraceOptions {
            common: PingOptions {
                request: RawRequest {
                    count: self.count,
                    interval: self.interval,
                    timeout: self.timeout,
                    size: self.size,
                    family: Some(family.to_owned()),
                    plain_seconds: true,
                    ..RawRequest::default()
                },
                hosts: self.hosts,
                dns_server: self.dns_server,
                format: self.format,
            },
            path: RawPath {
                first_ttl: self.first_ttl,
                max_ttl: self.max_ttl,
                flows: self.flows,
                protocol: self.protocol,
                pace: self.pace,
            },
        }
    }
}

/// `0x10` as `16`, as iputils takes `-Q`; anything else as it is.
fn hex_or_decimal(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .map_or_else(|| s.to_owned(), |n| n.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_flags_become_one_request() {
        let cli = Cli::try_parse_from([
            "pingscope",
            "ping",
            "-c",
            "3",
            "-Q",
            "0x10",
            "-6",
            "-i",
            "0.2",
            "h",
        ])
        .expect("parses");
        let Command::Ping(args) = cli.command else {
            panic!("not ping")
        };
        let o = args.into_options();
        assert_eq!(o.hosts, ["h"]);
        assert_eq!(o.request.count.as_deref(), Some("3"));
        assert_eq!(o.request.tos.as_deref(), Some("16"));
        assert_eq!(o.request.family.as_deref(), Some("ip6"));
        assert!(o.request.plain_seconds);
    }

    #[test]
    fn dns_server_flag() {
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
