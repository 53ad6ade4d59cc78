//! The shapes of the responder's JSON-lines log and of its timing report.

use std::net::IpAddr;

use serde::Serialize;

/// One line of the JSON-lines log: one packet received and what became of it.
#[derive(Debug, Serialize)]
pub(crate) struct LogLine {
    /// Wall-clock arrival, nanoseconds since the Unix epoch.
    pub(crate) time_ns: u128,
    /// `icmp` (echo requests of either family), `udp` or `tcp`.
    pub(crate) proto: &'static str,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) family: &'static str,
    /// ICMP echo identifier and sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u16>,
    /// UDP and TCP ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dport: Option<u16>,
    /// UDP checksum field as sent: Paris probers keep it constant per flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) checksum: Option<u16>,
    /// TCP flags, e.g. `SYN` or `FIN|ACK`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) flags: Option<String>,
    /// TTL / hop limit as received.
    pub(crate) ttl: u8,
    /// What ECMP routers hash (see `path::flow_hash`), 16 hex digits.
    pub(crate) flow: String,
    /// Payload bytes after the ICMP, UDP or TCP header.
    pub(crate) size: usize,
    pub(crate) action: &'static str,
    /// The hop (1-based TTL) where the packet expired or was lost, and its address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hop: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hop_addr: Option<IpAddr>,
    pub(crate) copies: u32,
    pub(crate) scheduled_delay_ns: Option<u64>,
    /// From arrival to the first copy's `write`.
    pub(crate) actual_delay_ns: Option<u64>,
    /// From the kernel's stamp to this process reading the request; absent without a stamp
    /// (then arrival is the read time).
    pub(crate) read_lag_ns: Option<u64>,
}

/// Timing error summary, nanoseconds.
#[derive(Debug, Serialize)]
pub struct TimingReport {
    pub(crate) r#type: &'static str,
    pub(crate) samples: usize,
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) max_ns: u64,
}
