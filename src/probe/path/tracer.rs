//! The tracer: the rounds of one path probe to one address, its flows and their identities
//! (re-keyed when a flow repeats another's path), and hop probes as samples.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::stats;
use super::{
    FLOW_IDENTITIES, HopPacer, HopProbe, HopResult, MAX_FLOWS, PathOptions, PathProtocol, Round,
    UDP_PORT,
};
use crate::engine::{
    EventKind, EventSink, IcmpErrorKind, Pinger, ProbeEvent, ProbeSpec, SocketOptions, Transport,
};
use crate::sample::{Sample, SampleType, millis};

/// One flow of a tracer: its current identity and what that identity has seen.
#[derive(Debug, Default)]
pub(super) struct FlowSlot {
    /// 0 .. [`FLOW_IDENTITIES`].
    pub(super) identity: u8,
    /// The engine holds this identity's socket for us ([`Pinger::hold_flow`]).
    held: bool,
    /// Per TTL up to the destination, the responder this identity saw last and in which
    /// round; forgotten after [`stats::FORGET_ROUNDS`] rounds, as the stats forget it.
    pub(super) seen: std::collections::BTreeMap<u8, (IpAddr, u64)>,
}

/// The number the engine knows a flow identity by: distinct for every (flow, identity) of a
/// tracer, so each is its own socket and checksum.
pub(super) fn wire_flow(flow: u16, identity: u8) -> u16 {
    u16::from(identity) * MAX_FLOWS + flow
}

/// True when every responder `a` saw, `b` saw at the same TTL: `a` tells nothing `b` does not.
fn covers(b: &FlowSlot, a: &FlowSlot) -> bool {
    !a.seen.is_empty()
        && a.seen
            .iter()
            .all(|(ttl, (r, _))| b.seen.get(ttl).is_some_and(|(s, _)| s == r))
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
    /// One per flow.
    pub(super) flows: Vec<FlowSlot>,
    /// Identities re-keyed after the last round, still held: released after the next round's
    /// sends, so their sockets are still bound when the new identities' sockets open and the
    /// kernel cannot hand a new one the port (UDP, ICMP datagram) it is leaving.
    retired: Vec<ProbeSpec>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        for flow in 0..self.flows.len() {
            self.release(flow);
        }
        for spec in self.retired.drain(..) {
            self.pinger.release_flow(&spec);
        }
    }
}

/// A probe's tag: its TTL and its flow's wire number ([`wire_flow`]).
fn tag(ttl: u8, wire: u16) -> u64 {
    (u64::from(ttl) << 16) | u64::from(wire)
}

/// (TTL, flow, identity) of a tag.
fn untag(tag: u64) -> (u8, u16, u8) {
    let wire = (tag & 0xffff) as u16;
    (
        ((tag >> 16) & 0xff) as u8,
        wire % MAX_FLOWS,
        u8::try_from(wire / MAX_FLOWS).unwrap_or(u8::MAX),
    )
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
        let flows = (0..options.flows.clamp(1, MAX_FLOWS))
            .map(|_| FlowSlot::default())
            .collect();
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
            flows,
            retired: Vec::new(),
        }
    }

    /// A tracer to `ip` with the size, timeout and socket options of `request`.
    pub fn for_request(
        pinger: Arc<dyn Pinger>,
        ip: IpAddr,
        request: &crate::probe::ProbeRequest,
        options: PathOptions,
    ) -> Self {
        let socket = request.options.clone();
        Self::new(pinger, ip, request.size, request.timeout, socket, options)
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

    /// The identity each flow's next probes carry (0 first, one more at each re-key).
    pub fn identities(&self) -> Vec<u8> {
        self.flows.iter().map(|f| f.identity).collect()
    }

    /// The probe of `flow`'s current identity at `ttl`.
    fn spec(&self, flow: u16, ttl: u8) -> ProbeSpec {
        let identity = self.flows.get(usize::from(flow)).map_or(0, |f| f.identity);
        let wire = wire_flow(flow, identity);
        let transport = match self.options.protocol {
            PathProtocol::Icmp => Transport::IcmpFlow { flow: wire, ttl },
            PathProtocol::Udp => Transport::UdpFlow {
                flow: wire,
                ttl,
                port: UDP_PORT,
            },
        };
        ProbeSpec {
            ip: self.ip,
            transport,
            size: self.size,
            timeout: self.timeout,
            options: self.socket.clone(),
        }
    }

    /// Gives back the engine's hold on `flow`'s current identity, if taken.
    fn release(&mut self, flow: usize) {
        if let Some(spec) = self.unhold(flow) {
            self.pinger.release_flow(&spec);
        }
    }

    /// The spec of `flow`'s current identity if it is held, now marked not held.
    fn unhold(&mut self, flow: usize) -> Option<ProbeSpec> {
        let held = std::mem::take(&mut self.flows.get_mut(flow)?.held);
        held.then(|| self.spec(u16::try_from(flow).unwrap_or(0), 1))
    }

    /// Learns what each flow's identity saw this round, then re-keys the flows whose path
    /// another kept flow covers (see the module docs); returns them.
    pub(super) fn explore(
        &mut self,
        round: u64,
        probes: &[HopProbe],
        reached: Option<u8>,
    ) -> Vec<u16> {
        for p in probes {
            if let (Some(r), Some(slot)) = (p.responder, self.flows.get_mut(usize::from(p.flow)))
                && slot.identity == p.identity
            {
                slot.seen.insert(p.ttl, (r, round));
            }
        }
        for slot in &mut self.flows {
            slot.seen.retain(|ttl, (_, at)| {
                round.saturating_sub(*at) < stats::FORGET_ROUNDS
                    && reached.is_none_or(|l| *ttl <= l)
            });
        }
        // The highest flows first: the lowest of several alike keeps its identity.
        let mut rekeyed: Vec<u16> = Vec::new();
        for a in (0..self.flows.len()).rev() {
            let redundant = self.flows[a].identity + 1 < FLOW_IDENTITIES
                && self.flows.iter().enumerate().any(|(b, other)| {
                    b != a
                        && !rekeyed.iter().any(|r| usize::from(*r) == b)
                        && covers(other, &self.flows[a])
                });
            if redundant {
                rekeyed.push(u16::try_from(a).unwrap_or(0));
            }
        }
        for &flow in &rekeyed {
            if let Some(spec) = self.unhold(usize::from(flow)) {
                self.retired.push(spec);
            }
            if let Some(slot) = self.flows.get_mut(usize::from(flow)) {
                slot.identity += 1;
                slot.seen.clear();
                tracing::debug!(ip = %self.ip, flow, identity = slot.identity, "path flow re-keyed");
            }
        }
        rekeyed.sort_unstable();
        rekeyed
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
        let flows = u16::try_from(self.flows.len()).unwrap_or(1);
        for flow in 0..flows {
            let spec = self.spec(flow, first);
            if let Some(slot) = self.flows.get_mut(usize::from(flow))
                && !slot.held
            {
                slot.held = true;
                self.pinger.hold_flow(&spec);
            }
        }
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
                let spec = self.spec(flow, ttl);
                let identity = self.flows.get(usize::from(flow)).map_or(0, |f| f.identity);
                let t = tag(ttl, wire_flow(flow, identity));
                sent_at.insert(t, SystemTime::now());
                if let Err(e) = self.pinger.send(&spec, t, &sink) {
                    sent_at.remove(&t);
                    let p = HopProbe {
                        round: number,
                        ttl,
                        flow,
                        identity,
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
        // The new identities' sockets are open now (or failed to open): let the old ones go.
        for spec in std::mem::take(&mut self.retired) {
            self.pinger.release_flow(&spec);
        }
        let end = Instant::now() + self.timeout + Duration::from_secs(1);
        while !sent_at.is_empty() {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(p) =
                        settle(self.ip, self.options.protocol, number, ev, &mut sent_at)
                    {
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
        let rekeyed = self.explore(number, &probes, reached);
        Round {
            number,
            probes,
            reached_at: reached,
            rekeyed,
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
    let (ttl, flow, identity) = untag(ev.tag);
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
        identity,
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
