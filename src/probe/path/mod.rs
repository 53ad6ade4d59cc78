//! The `path` kind: mtr-style rounds of per-hop probes, ECMP-aware with Paris flows.
//!
//! A [`Tracer`] sends one round at a time to one address: for every TTL from `first_ttl` up to
//! the destination (learned from the last round, `max_ttl` while unknown), one probe per flow,
//! paced `pace` apart, each on its own deadline. Every probe is a
//! [`Transport::IcmpFlow`](crate::engine::Transport::IcmpFlow) (the default): the engine keeps
//! the identifier and checksum of a flow constant; or, with `protocol: udp`, a
//! [`Transport::UdpFlow`](crate::engine::Transport::UdpFlow) to the closed port [`UDP_PORT`]:
//! the engine keeps the ports and the checksum of a flow constant, and the destination's port
//! unreachable is its answer. Either way a router that balances by a hash of those fields sends
//! the whole flow one way. A round stops climbing at the TTL where the destination answered;
//! the next round re-checks that TTL, so a path that grows or shrinks is followed. Outcomes are
//! matched to (TTL, flow) by the probe's tag, and to the round by the round's own channel: a
//! late answer of an older round never counts.
//!
//! # Exploring ECMP branches
//!
//! A flow's identity (its ICMP identifier or UDP source port, which the kernel picks per socket,
//! and its checksum) decides the branch a hashing router sends it down, and no choice of
//! identities made in advance spreads over the branches of an unknown hash: 4 flows over 2
//! branches all take one 1 time in 8. So the tracer explores, after the idea of Paris
//! traceroute's Multipath Detection Algorithm: each flow keeps its identity while it shows a
//! path of its own, and a flow that only repeats another kept flow (the other saw the same
//! responder at every TTL where this one has an answer in the last [`stats::FORGET_ROUNDS`]
//! rounds) is *re-keyed* after the round: its next probes carry a new identity (a new socket,
//! so a new identifier or source port, and another checksum). Of several alike the lowest flow
//! keeps its identity, so a re-key never loses a branch found. Each flow takes at most
//! [`FLOW_IDENTITIES`] identities; then it keeps its last, and once every flow has found its
//! own path or spent its budget the identities freeze. `flows: N` thus finds up to N branches
//! with high probability in the first rounds (4 flows over 2 branches: all identities of the
//! first 3 rounds on one branch with p = 2^-9); `flows: 1` never re-keys, and a single round
//! (a one-round `/probe`) sees the first identities only. Every probe of one identity keeps
//! its hashed fields, so it sees one path; [`HopProbe::identity`] says which identity sent a
//! probe, and [`PathStats`] counts a change only when what one identity saw is replaced (a new
//! identity finding a new responder is discovery).
//!
//! The engine holds a socket for each identity in use
//! ([`Pinger::hold_flow`](crate::engine::Pinger::hold_flow)); a re-keyed identity is released
//! after the next round's sends, when its successor's socket is open (so the kernel cannot hand
//! the successor the port it frees), and a tracer releases all of its identities when it ends. A tracer thus keeps at most `2 × flows` flow sockets, and the
//! engine's flow numbers stay below `MAX_FLOWS × FLOW_IDENTITIES` (128).
//!
//! Tracers that share a [`HopPacer`] (the daemon's path monitors) take a token of the router that
//! answered a (TTL, flow) last round before probing it again, so many monitors through one
//! router stay under its ICMP rate limit together; a probe without a token is not sent.
//!
//! [`stats::PathStats`] folds rounds into per-hop figures (per TTL and responder), the loss that
//! persists to later hops, and the path id; [`history::PathHistory`] keeps the last paths taken.

pub mod history;
pub mod options;
pub mod pacer;
pub mod run;
pub mod stats;
mod tracer;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use history::{PathEntry, PathHistory};
pub use options::{RawPath, validate_path};
pub use pacer::HopPacer;
pub use stats::{HopSummary, PathStats};
pub use tracer::{Tracer, hop_sample};

/// Highest TTL probed by default (traceroute's and mtr's).
pub const DEFAULT_MAX_TTL: u8 = 30;
/// Most flows one path probe may use: each is a socket of its own, and each multiplies the
/// probes every router on the path answers.
pub const MAX_FLOWS: u16 = 16;
/// Default gap between two probes to one target: a 30-hop round takes 300 ms per flow. Per hop
/// the pace is the round's: each router sees `flows` probes of a target per round interval,
/// under the usual ICMP rate limits (Linux answers a burst of 6, then one a second per peer)
/// at the defaults (one flow, one round a second).
pub const DEFAULT_PACE: Duration = Duration::from_millis(10);

/// Identities each flow may take: its first and up to 7 re-keys (see the module docs). Over
/// two equally likely branches, a flow that repeats another's path through all of them has
/// missed the other branch 8 times in a row (p = 1/256) on its own.
pub const FLOW_IDENTITIES: u8 = 8;

/// Destination port of UDP path probes: traceroute's first one, closed on almost every host.
/// One port for every probe (traceroute adds one per probe; a Paris flow cannot).
pub const UDP_PORT: u16 = 33434;

/// What a path probe sends at each hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathProtocol {
    /// ICMP echo requests (the default).
    #[default]
    Icmp,
    /// UDP datagrams to a closed high port, traceroute-style.
    Udp,
}

impl PathProtocol {
    /// The name in flags, config and samples.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Udp => "udp",
        }
    }
}

/// How a path is probed, beyond what every request says (size, timeout, socket options).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PathOptions {
    /// First TTL probed.
    pub first_ttl: u8,
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// Distinct Paris flows per round.
    pub flows: u16,
    /// What is sent.
    pub protocol: PathProtocol,
    /// Gap between two probes to the target.
    #[serde(with = "crate::duration::serde_duration")]
    pub pace: Duration,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            first_ttl: 1,
            max_ttl: DEFAULT_MAX_TTL,
            flows: 1,
            protocol: PathProtocol::Icmp,
            pace: DEFAULT_PACE,
        }
    }
}

/// What happened to one hop probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopResult {
    /// The destination answered (echo reply; for UDP, its port unreachable).
    Reply,
    /// A router at this TTL answered time exceeded.
    TimeExceeded,
    /// Destination unreachable (from the destination: it was reached; from a router: no path).
    Unreachable,
    /// Another ICMP error.
    Error,
    /// Nothing within the timeout.
    Timeout,
    /// The probe could not be sent.
    SendError,
}

impl HopResult {
    /// The name in samples.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::TimeExceeded => "time_exceeded",
            Self::Unreachable => "unreachable",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::SendError => "send_error",
        }
    }
}

/// One hop probe and its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct HopProbe {
    /// Round number, from 1.
    pub round: u64,
    /// TTL it was sent with.
    pub ttl: u8,
    /// Its flow.
    pub flow: u16,
    /// Which identity of its flow sent it: 0 first, one more at each re-key (a new ICMP
    /// identifier or UDP source port, and a new checksum).
    pub identity: u8,
    /// When it settled (the receive time of its answer).
    pub at: SystemTime,
    /// What happened.
    pub result: HopResult,
    /// Who answered (the destination for a reply, the router for an error).
    pub responder: Option<IpAddr>,
    /// Time to the answer.
    pub rtt: Option<Duration>,
    /// ICMP type of the answer (v4 or v6 numbering).
    pub icmp_type: Option<u8>,
    /// Why the send failed.
    pub error: Option<String>,
    /// The send failure's `reason` label of `pingscope_send_errors_total`
    /// ([`crate::engine::SendError::reason`]).
    pub reason: Option<&'static str>,
}

impl HopProbe {
    /// True when this answer came from the destination itself: the path ends at this TTL.
    pub fn reached(&self, dst: IpAddr) -> bool {
        matches!(self.result, HopResult::Reply)
            || (self.result == HopResult::Unreachable && self.responder == Some(dst))
    }

    /// True when someone answered.
    pub fn answered(&self) -> bool {
        self.responder.is_some()
    }
}

/// One finished round.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// Its number, from 1.
    pub number: u64,
    /// Every probe, in (TTL, flow) order.
    pub probes: Vec<HopProbe>,
    /// The lowest TTL at which the destination answered in this round.
    pub reached_at: Option<u8>,
    /// Flows re-keyed after this round: their path duplicated another flow's, and their next
    /// probes carry a new identity.
    pub rekeyed: Vec<u16>,
}

#[cfg(test)]
mod tests;
