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
//! the whole flow one way, and `flows` flows find up to that many ECMP branches. A round stops climbing at
//! the TTL where the destination answered; the next round re-checks that TTL, so a path that
//! grows or shrinks is followed. Outcomes are matched to (TTL, flow) by the probe's tag, and to
//! the round by the round's own channel: a late answer of an older round never counts.
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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::{
    EventKind, EventSink, IcmpErrorKind, Pinger, ProbeEvent, ProbeSpec, SocketOptions, Transport,
};

use crate::sample::{Sample, SampleType, millis};
pub use history::{PathEntry, PathHistory};
pub use options::{RawPath, validate_path};
pub use pacer::HopPacer;
pub use stats::{HopSummary, PathStats};

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
}

/// Runs the rounds of one path probe to one address.
#[derive(Debug)]
pub struct Tracer {
    pinger: Arc<dyn Pinger>,
    ip: IpAddr,
    size: u16,
    timeout: Duration,
    socket: SocketOptions,
    options: PathOptions,
    round: u64,
    /// Where the destination answered last round: the round climbs no higher.
    dest_ttl: Option<u8>,
    /// Shared per-router pacing, if any.
    pacer: Option<HopPacer>,
    /// The router that answered each (TTL, flow) last round: whose token its next probe takes.
    routers: std::collections::HashMap<(u8, u16), IpAddr>,
}

fn tag(ttl: u8, flow: u16) -> u64 {
    (u64::from(ttl) << 16) | u64::from(flow)
}

fn untag(tag: u64) -> (u8, u16) {
    (((tag >> 16) & 0xff) as u8, (tag & 0xffff) as u16)
}

impl Tracer {
    /// A tracer to `ip`; `size`, `timeout` and `socket` are the request's (the socket's TTL is
    /// replaced by each probe's).
    pub fn new(
        pinger: Arc<dyn Pinger>,
        ip: IpAddr,
        size: u16,
        timeout: Duration,
        socket: SocketOptions,
        options: PathOptions,
    ) -> Self {
        Self {
            pinger,
            ip,
            size,
            timeout,
            socket,
            options,
            round: 0,
            dest_ttl: None,
            pacer: None,
            routers: Default::default(),
        }
    }

    /// Paces probes to routers through `pacer`, shared with other tracers.
    #[must_use]
    pub fn with_pacer(mut self, pacer: HopPacer) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// The address traced.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The highest TTL the next round sends.
    pub fn next_limit(&self) -> u8 {
        let max = self.options.max_ttl.max(self.options.first_ttl);
        self.dest_ttl
            .map_or(max, |d| d.clamp(self.options.first_ttl, max))
    }

    /// Probes one round, handing each probe to `on_probe` as it settles; returns the round.
    /// Bounded: it sends at most `flows × (max_ttl − first_ttl + 1)` probes and ends at most
    /// `timeout` plus a second after its last send.
    pub async fn round(&mut self, mut on_probe: impl FnMut(&HopProbe)) -> Round {
        self.round += 1;
        let number = self.round;
        let first = self.options.first_ttl;
        let limit = self.next_limit();
        let flows = self.options.flows.max(1);
        let planned = usize::from(limit - first + 1) * usize::from(flows);
        // Room for every terminal event and a late or duplicate one each: never full.
        let (tx, mut rx) = mpsc::channel::<ProbeEvent>(planned * 2 + 8);
        let sink = EventSink::from(tx);
        let mut sent_at: std::collections::HashMap<u64, SystemTime> = Default::default();
        let mut probes: Vec<HopProbe> = Vec::with_capacity(planned);
        let mut reached: Option<u8> = None;
        let mut next_send = Instant::now();
        'send: for ttl in first..=limit {
            for flow in 0..flows {
                // Wait for the pace, taking answers meanwhile (they may end the climb).
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(next_send) => break,
                        ev = rx.recv() => if let Some(p) = ev.and_then(|ev| settle(self.ip, self.options.protocol, number, ev, &mut sent_at)) {
                            note(&p, self.ip, &mut reached);
                            on_probe(&p);
                            probes.push(p);
                        },
                    }
                }
                if reached.is_some_and(|r| r < ttl) {
                    break 'send;
                }
                if let (Some(pacer), Some(router)) = (&self.pacer, self.routers.get(&(ttl, flow)))
                    && !pacer.try_take(*router, Instant::now())
                {
                    continue;
                }
                let transport = match self.options.protocol {
                    PathProtocol::Icmp => Transport::IcmpFlow { flow, ttl },
                    PathProtocol::Udp => Transport::UdpFlow {
                        flow,
                        ttl,
                        port: UDP_PORT,
                    },
                };
                let spec = ProbeSpec {
                    ip: self.ip,
                    transport,
                    size: self.size,
                    timeout: self.timeout,
                    options: self.socket.clone(),
                };
                let t = tag(ttl, flow);
                sent_at.insert(t, SystemTime::now());
                if let Err(e) = self.pinger.send(&spec, t, &sink) {
                    sent_at.remove(&t);
                    let p = HopProbe {
                        round: number,
                        ttl,
                        flow,
                        at: SystemTime::now(),
                        result: HopResult::SendError,
                        responder: None,
                        rtt: None,
                        icmp_type: None,
                        error: Some(e.to_string()),
                        reason: Some(e.reason()),
                    };
                    on_probe(&p);
                    probes.push(p);
                }
                next_send += self.options.pace;
            }
        }
        drop(sink);
        let end = Instant::now() + self.timeout + Duration::from_secs(1);
        while !sent_at.is_empty() {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(p) =
                        settle(self.ip, self.options.protocol, number, ev, &mut sent_at)
                    {
                        sent_at.remove(&tag(p.ttl, p.flow));
                        note(&p, self.ip, &mut reached);
                        on_probe(&p);
                        probes.push(p);
                    }
                }
                _ => break,
            }
        }
        probes.sort_by_key(|p| (p.ttl, p.flow));
        for p in &probes {
            match (p.result, p.responder) {
                (HopResult::Reply, _) => {
                    self.routers.remove(&(p.ttl, p.flow));
                }
                (_, Some(r)) if r != self.ip => {
                    self.routers.insert((p.ttl, p.flow), r);
                }
                _ => {}
            }
        }
        // Re-checked every round: where it answered now, or unknown (climb to max_ttl next).
        self.dest_ttl = reached;
        Round {
            number,
            probes,
            reached_at: reached,
        }
    }
}

/// The hop probe a terminal event settles (and takes out of `sent`); `None` for late and
/// duplicate answers and for tags this round did not send or already settled.
fn settle(
    dst: IpAddr,
    protocol: PathProtocol,
    round: u64,
    ev: ProbeEvent,
    sent: &mut std::collections::HashMap<u64, SystemTime>,
) -> Option<HopProbe> {
    if !ev.kind.is_terminal() {
        return None;
    }
    let sent_at = sent.remove(&ev.tag)?;
    let (ttl, flow) = untag(ev.tag);
    let (result, responder, rtt, icmp_type) = match ev.kind {
        EventKind::Reply(r) => (HopResult::Reply, Some(ev.ip), Some(r.rtt), None),
        EventKind::Timeout => (HopResult::Timeout, None, None, None),
        EventKind::IcmpError(e) => {
            let result = match e.kind {
                IcmpErrorKind::TimeExceeded => HopResult::TimeExceeded,
                IcmpErrorKind::Unreachable => HopResult::Unreachable,
                _ => HopResult::Error,
            };
            // The engine measures it; a pinger that cannot falls back to wall time.
            let rtt = e.rtt.or_else(|| ev.at.duration_since(sent_at).ok());
            (result, Some(e.from), rtt, Some(e.icmp_type))
        }
        EventKind::Late(_) | EventKind::Duplicate(_) => return None,
    };
    // The destination's answer: an echo reply, or for UDP its port unreachable.
    let icmp_type = icmp_type.or(match (result, protocol, dst) {
        (HopResult::Reply, PathProtocol::Icmp, IpAddr::V4(_)) => Some(0),
        (HopResult::Reply, PathProtocol::Icmp, IpAddr::V6(_)) => Some(129),
        (HopResult::Reply, PathProtocol::Udp, IpAddr::V4(_)) => Some(3),
        (HopResult::Reply, PathProtocol::Udp, IpAddr::V6(_)) => Some(1),
        _ => None,
    });
    Some(HopProbe {
        round,
        ttl,
        flow,
        at: ev.at,
        result,
        responder,
        rtt,
        icmp_type,
        error: None,
        reason: None,
    })
}

/// A hop probe as a sample (`type: hop`), for sessions and their WebSockets.
pub fn hop_sample(target: &str, ip: IpAddr, p: &HopProbe) -> Sample {
    Sample {
        rtt_ms: p.rtt.map(millis),
        ttl: Some(p.ttl),
        error: p.error.clone(),
        icmp_type: p.icmp_type,
        from: p.responder,
        round: Some(p.round),
        flow: Some(p.flow),
        result: Some(p.result.as_str().to_owned()),
        ..Sample::new(SampleType::Hop, target, target, Some(ip), None, p.at)
    }
}

fn note(p: &HopProbe, dst: IpAddr, reached: &mut Option<u8>) {
    if p.reached(dst) && reached.is_none_or(|r| p.ttl < r) {
        *reached = Some(p.ttl);
    }
}

#[cfg(test)]
mod tests;
