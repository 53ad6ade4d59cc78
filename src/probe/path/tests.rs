//! The tracer and its stats against a scripted path (tokio time, paused).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::*;
use crate::engine::{IcmpErrorInfo, IcmpErrorKind, ProbeEvent, ReplyInfo, SendError, Transport};

/// One hop of the scripted path: its branches (chosen by flow), its own delay, and loss.
#[derive(Clone, Debug, Default)]
struct FakeHop {
    branches: Vec<IpAddr>,
    /// The branch of a flow (the engine's flow number); the flow number modulo the branches
    /// when `None`.
    route: Option<fn(u16) -> usize>,
    delay: Duration,
    /// Every n-th probe that expires here gets no time exceeded (rate limit: not persistent).
    silent_every: u64,
    /// Every n-th probe passing through (or expiring) is dropped (persistent loss).
    drop_every: u64,
}

#[derive(Debug, Default)]
struct FakePath {
    dst: Option<IpAddr>,
    hops: Mutex<Vec<FakeHop>>,
    counts: Mutex<std::collections::HashMap<(usize, bool), u64>>,
    sent: AtomicU64,
    /// (ttl, flow) of every probe sent.
    log: Mutex<Vec<(u8, u16)>>,
    /// Destination port of every UDP probe sent.
    ports: Mutex<Vec<u16>>,
    /// Holds per flow socket ([`Pinger::hold_flow`]), and every release that closed one.
    holds: Mutex<std::collections::BTreeMap<u16, i64>>,
    closed: Mutex<Vec<u16>>,
}

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, d))
}

impl FakePath {
    fn new(dst: IpAddr, hops: Vec<FakeHop>) -> Arc<Self> {
        Arc::new(Self {
            dst: Some(dst),
            hops: Mutex::new(hops),
            ..Self::default()
        })
    }

    fn bump(&self, hop: usize, through: bool, every: u64) -> bool {
        if every == 0 {
            return false;
        }
        let mut c = self.counts.lock();
        let n = c.entry((hop, through)).or_default();
        *n += 1;
        (*n).is_multiple_of(every)
    }
}

impl Pinger for FakePath {
    fn send(&self, spec: &ProbeSpec, tag: u64, sink: &EventSink) -> Result<u16, SendError> {
        let (flow, ttl) = match spec.transport {
            Transport::IcmpFlow { flow, ttl } => (flow, ttl),
            Transport::UdpFlow { flow, ttl, port } => {
                self.ports.lock().push(port);
                (flow, ttl)
            }
            _ => return Err(SendError::Closed),
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.log.lock().push((ttl, flow));
        let hops = self.hops.lock().clone();
        let dst = self.dst.unwrap_or(spec.ip);
        let mut delay = Duration::ZERO;
        // Walk the path: each hop passed or expired at.
        let mut outcome: Option<EventKind> = None;
        for (i, hop) in hops.iter().enumerate() {
            delay += hop.delay;
            if self.bump(i, true, hop.drop_every) {
                break;
            }
            if i + 1 == hops.len() {
                outcome = Some(EventKind::Reply(ReplyInfo {
                    rtt: delay * 2,
                    ttl: Some(60),
                    size: 64,
                    refused: false,
                }));
                break;
            }
            if usize::from(ttl) == i + 1 {
                if !self.bump(i, false, hop.silent_every) {
                    let pick = hop.route.map_or(usize::from(flow), |r| r(flow));
                    let from = hop.branches[pick % hop.branches.len()];
                    outcome = Some(EventKind::IcmpError(IcmpErrorInfo {
                        kind: IcmpErrorKind::TimeExceeded,
                        icmp_type: 11,
                        icmp_code: 0,
                        from,
                        rtt: Some(delay * 2),
                    }));
                }
                break;
            }
        }
        let sink = sink.clone();
        let timeout = spec.timeout;
        tokio::spawn(async move {
            let (wait, kind) = match outcome {
                Some(k) => ((delay * 2).min(timeout), k),
                None => (timeout, EventKind::Timeout),
            };
            tokio::time::sleep(wait).await;
            let _ = sink.deliver(ProbeEvent {
                tag,
                seq: 0,
                ip: dst,
                at: SystemTime::now(),
                kind,
            });
        });
        Ok(0)
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn hold_flow(&self, spec: &ProbeSpec) {
        if let Some(flow) = flow_of(spec) {
            *self.holds.lock().entry(flow).or_default() += 1;
        }
    }

    fn release_flow(&self, spec: &ProbeSpec) {
        let Some(flow) = flow_of(spec) else { return };
        let mut holds = self.holds.lock();
        let n = holds.entry(flow).or_default();
        *n -= 1;
        assert!(*n >= 0, "flow {flow} released more than held");
        if *n == 0 {
            holds.remove(&flow);
            self.closed.lock().push(flow);
        }
    }
}

fn flow_of(spec: &ProbeSpec) -> Option<u16> {
    match spec.transport {
        Transport::IcmpFlow { flow, .. } | Transport::UdpFlow { flow, .. } => Some(flow),
        _ => None,
    }
}

fn hop(addr: u8, ms: u64) -> FakeHop {
    FakeHop {
        branches: vec![v4(addr)],
        delay: Duration::from_millis(ms),
        ..FakeHop::default()
    }
}

fn tracer(path: &Arc<FakePath>, options: PathOptions) -> Tracer {
    Tracer::new(
        path.clone(),
        v4(100),
        56,
        Duration::from_secs(1),
        SocketOptions::default(),
        options,
    )
}

async fn rounds(t: &mut Tracer, stats: &mut PathStats, n: usize) -> Vec<Round> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = t.round(|_| {}).await;
        stats.add_round(&r);
        out.push(r);
    }
    out
}

fn five_hops() -> Vec<FakeHop> {
    let mut hops: Vec<FakeHop> = (1..=4).map(|i| hop(i, 1)).collect();
    hops.push(hop(100, 1));
    hops
}

#[tokio::test(start_paused = true)]
async fn udp_paths_send_udp_flows_to_the_traceroute_port() {
    let path = FakePath::new(v4(100), five_hops());
    let options = PathOptions {
        protocol: PathProtocol::Udp,
        flows: 2,
        ..PathOptions::default()
    };
    let mut t = tracer(&path, options);
    let round = t.round(|_| {}).await;
    assert_eq!(round.reached_at, Some(5));
    let ports = path.ports.lock().clone();
    assert_eq!(ports.len(), path.log.lock().len(), "every probe is UDP");
    assert!(ports.iter().all(|p| *p == UDP_PORT), "{ports:?}");
    // The destination's answer is its port unreachable (ICMPv4 type 3).
    let reply = round
        .probes
        .iter()
        .find(|p| p.result == HopResult::Reply)
        .expect("reply");
    assert_eq!((reply.ttl, reply.icmp_type), (5, Some(3)));
}

#[tokio::test(start_paused = true)]
async fn finds_every_hop_in_order_and_stops_at_the_destination() {
    let path = FakePath::new(v4(100), five_hops());
    let mut t = tracer(&path, PathOptions::default());
    let mut stats = PathStats::new();
    let first = t.round(|_| {}).await;
    stats.add_round(&first);
    assert_eq!(first.reached_at, Some(5));
    // The first round climbs while it does not know the length; the paced sends see the
    // destination's answer soon after TTL 5 and stop well before 30.
    assert!(path.sent.load(Ordering::Relaxed) < 30, "stopped early");
    let sent_before = path.sent.load(Ordering::Relaxed);
    rounds(&mut t, &mut stats, 3).await;
    assert_eq!(
        path.sent.load(Ordering::Relaxed) - sent_before,
        15,
        "5 TTLs a round"
    );
    let order: Vec<(u8, Option<IpAddr>)> = stats
        .summaries()
        .iter()
        .map(|h| (h.ttl, h.responder))
        .collect();
    assert_eq!(
        order,
        vec![
            (1, Some(v4(1))),
            (2, Some(v4(2))),
            (3, Some(v4(3))),
            (4, Some(v4(4))),
            (5, Some(v4(100)))
        ]
    );
    let s = stats.summaries();
    for (i, h) in s.iter().enumerate() {
        let want = 2.0 * (i as f64 + 1.0);
        let r = h.rtt_ms.as_ref().expect("rtt");
        assert!((r.avg - want).abs() < 1e-9 && r.stdev == 0.0, "{h:?}");
        assert_eq!(h.lost, 0);
    }
    assert_eq!(stats.length(), Some(5));
    assert_eq!(stats.changes(), 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_loss_does_not_persist_and_real_loss_does() {
    let mut hops = five_hops();
    hops[1].silent_every = 2; // hop 2 answers every other probe
    hops[2].drop_every = 4; // hop 3 drops a quarter of what passes
    let path = FakePath::new(v4(100), hops);
    let mut t = tracer(&path, PathOptions::default());
    let mut stats = PathStats::new();
    rounds(&mut t, &mut stats, 40).await;
    let s = stats.summaries();
    let at = |ttl: u8| s.iter().filter(|h| h.ttl == ttl).collect::<Vec<_>>();
    let h2 = at(2);
    assert!(h2.iter().any(|h| h.lost > 0));
    assert!(h2.iter().all(|h| !h.loss_persists), "{h2:?}");
    for ttl in 3..=5 {
        for h in at(ttl) {
            assert!(h.loss_ratio > 0.15 && h.loss_persists, "ttl {ttl}: {h:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn flows_find_ecmp_branches_and_one_flow_keeps_one() {
    let mut hops = five_hops();
    hops[2].branches = vec![v4(31), v4(32)];
    let path = FakePath::new(v4(100), hops.clone());
    let mut t = tracer(
        &path,
        PathOptions {
            flows: 4,
            ..PathOptions::default()
        },
    );
    let mut stats = PathStats::new();
    rounds(&mut t, &mut stats, 3).await;
    assert_eq!(
        stats.responders().get(&3).cloned().unwrap_or_default(),
        [v4(31), v4(32)].into_iter().collect()
    );
    let one = FakePath::new(v4(100), hops);
    let mut t = tracer(&one, PathOptions::default());
    let mut stats = PathStats::new();
    rounds(&mut t, &mut stats, 5).await;
    assert_eq!(stats.responders().get(&3).map(|s| s.len()), Some(1));
    assert_eq!(stats.changes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_path_change_counts_once_and_changes_the_id() {
    let path = FakePath::new(v4(100), five_hops());
    let mut t = tracer(&path, PathOptions::default());
    let mut stats = PathStats::new();
    rounds(&mut t, &mut stats, 3).await;
    let before = stats.path_id().map(str::to_owned);
    path.hops.lock()[1].branches = vec![v4(22)];
    rounds(&mut t, &mut stats, 3).await;
    assert_eq!(stats.changes(), 1);
    assert_ne!(stats.path_id().map(str::to_owned), before);
    // A longer path: one more change, and the round climbs past the old length.
    path.hops.lock().insert(2, hop(9, 1));
    rounds(&mut t, &mut stats, 3).await;
    assert_eq!(stats.length(), Some(6));
    assert_eq!(
        stats.changes(),
        2,
        "TTL 3 and on replaced, then the longer climb's new length: one change"
    );
}

/// A round that straddles a change (TTL 1 already on the new path, TTL 2 not yet) and the round
/// after it are one change; a change back later is another, and so is each flip of a flapping
/// path.
#[test]
fn a_change_seen_over_consecutive_rounds_counts_once() {
    let round = |n: u64, hops: [u8; 2]| Round {
        number: n,
        probes: hops
            .iter()
            .enumerate()
            .map(|(i, h)| HopProbe {
                round: n,
                ttl: i as u8 + 1,
                flow: 0,
                identity: 0,
                at: SystemTime::UNIX_EPOCH,
                result: if i == 1 {
                    HopResult::Reply
                } else {
                    HopResult::TimeExceeded
                },
                responder: Some(v4(*h)),
                rtt: Some(Duration::from_millis(1)),
                icmp_type: None,
                error: None,
                reason: None,
            })
            .collect(),
        reached_at: Some(2),
        rekeyed: Vec::new(),
    };
    let mut st = PathStats::new();
    let mut begun = Vec::new();
    for (n, hops) in [[1, 9], [1, 9], [2, 9], [2, 8], [2, 8], [2, 8], [1, 9]]
        .into_iter()
        .enumerate()
    {
        if st.add_round(&round(n as u64 + 1, hops)) {
            begun.push(n + 1);
        }
    }
    assert_eq!(begun, vec![3, 7], "changes begin at rounds 3 and 7");
    assert_eq!(st.changes(), 2);
    // A path that flaps every round replaces the same hop again each time: every flip counts.
    let mut st = PathStats::new();
    for (n, hops) in [[1, 9], [2, 9], [1, 9], [2, 9]].into_iter().enumerate() {
        st.add_round(&round(n as u64 + 1, hops));
    }
    assert_eq!(st.changes(), 3, "three flips");
}

/// The id is FNV-1a of `TTL=responders;...`: here of `1=198.18.0.1`, computed apart (Python).
#[test]
fn path_id_is_stable_across_builds() {
    let mut st = PathStats::new();
    st.add_round(&Round {
        number: 1,
        probes: vec![HopProbe {
            round: 1,
            ttl: 1,
            flow: 0,
            identity: 0,
            at: SystemTime::UNIX_EPOCH,
            result: HopResult::Reply,
            responder: Some(v4(1)),
            rtt: Some(Duration::from_millis(1)),
            icmp_type: Some(0),
            error: None,
            reason: None,
        }],
        reached_at: Some(1),
        rekeyed: Vec::new(),
    });
    assert_eq!(st.path_id(), Some("b6c470c45607e3bd"));
}

/// Two tracers through the same routers share their buckets: once the routers are known, what
/// one took the other does not get, so the routers see the pacer's rate whatever the number of
/// monitors; the destination is not paced, and the buckets refill with time.
#[tokio::test(start_paused = true)]
async fn tracers_sharing_a_pacer_share_each_routers_rate() {
    let path = FakePath::new(v4(100), vec![hop(1, 1), hop(2, 1), hop(100, 1)]);
    let pacer = HopPacer::new(1.0, 1);
    let mut a = tracer(&path, PathOptions::default()).with_pacer(pacer.clone());
    let mut b = tracer(&path, PathOptions::default()).with_pacer(pacer);
    let ttls = |r: &Round| r.probes.iter().map(|p| p.ttl).collect::<Vec<_>>();
    // First rounds learn the routers: nothing to pace yet.
    assert_eq!(ttls(&a.round(|_| {}).await), [1, 2, 3]);
    assert_eq!(ttls(&b.round(|_| {}).await), [1, 2, 3]);
    // A takes each router's one token; B, well within the second, probes the destination only.
    let sent = path.sent.load(Ordering::Relaxed);
    assert_eq!(ttls(&a.round(|_| {}).await), [1, 2, 3]);
    let paced = b.round(|_| {}).await;
    assert_eq!(ttls(&paced), [3], "routers' probes held back");
    assert_eq!(paced.reached_at, Some(3));
    assert_eq!(
        path.sent.load(Ordering::Relaxed) - sent,
        4,
        "3 for A, 1 for B"
    );
    // A second later the buckets have a token again.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(ttls(&b.round(|_| {}).await), [1, 2, 3]);
}

/// A router whose hash sends every flow's first identity one way, and every later one the
/// other: the worst case for fixed identities, found by re-keying.
fn first_identities_on_branch_0(wire: u16) -> usize {
    usize::from(wire >= MAX_FLOWS)
}

fn ecmp_at_3(route: fn(u16) -> usize) -> Vec<FakeHop> {
    let mut hops = five_hops();
    hops[2].branches = vec![v4(31), v4(32)];
    hops[2].route = Some(route);
    hops
}

/// A 4-flow tracer through [`first_identities_on_branch_0`] at TTL 3.
fn four_flows_whose_first_identities_share_a_branch() -> (Arc<FakePath>, Tracer) {
    let path = FakePath::new(v4(100), ecmp_at_3(first_identities_on_branch_0));
    let options = PathOptions {
        flows: 4,
        ..PathOptions::default()
    };
    let t = tracer(&path, options);
    (path, t)
}

/// Per (flow, identity), the responders seen at `ttl` over `rounds`.
fn seen_at(
    rounds: &[Round],
    ttl: u8,
) -> std::collections::BTreeMap<(u16, u8), std::collections::BTreeSet<IpAddr>> {
    let mut out: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> = Default::default();
    for p in rounds.iter().flat_map(|r| &r.probes) {
        if let (true, Some(r)) = (p.ttl == ttl, p.responder) {
            out.entry((p.flow, p.identity)).or_default().insert(r);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn flows_that_duplicate_a_path_are_rekeyed_until_the_other_branch_is_found() {
    let (path, mut t) = four_flows_whose_first_identities_share_a_branch();
    let mut stats = PathStats::new();
    let first = rounds(&mut t, &mut stats, 1).await;
    assert_eq!(
        stats.responders()[&3],
        [v4(31)].into(),
        "all four flows on one branch"
    );
    let id_before = stats.path_id().map(str::to_owned);
    // Flows 1 to 3 repeat flow 0's path: re-keyed, the lowest keeps its identity.
    assert_eq!(first[0].rekeyed, [1, 2, 3]);
    assert_eq!(t.identities(), [0, 1, 1, 1]);
    let held = || path.holds.lock().keys().copied().collect::<Vec<u16>>();
    assert_eq!(
        held(),
        [0, 1, 2, 3],
        "held until the new identities are sent"
    );
    let second = rounds(&mut t, &mut stats, 1).await;
    assert_eq!(
        held(),
        [0, 17, 18, 19],
        "1, 2, 3 released; 18, 19 held a round more"
    );
    assert_eq!(stats.responders()[&3], [v4(31), v4(32)].into());
    assert_ne!(
        stats.path_id().map(str::to_owned),
        id_before,
        "discovery moves the id"
    );
    assert_eq!(stats.changes(), 0, "discovery is not a change");
    // Flow 1's new identity found the other branch; 2 and 3 repeat it and try again.
    assert_eq!(second[0].rekeyed, [2, 3]);
    // Each identity probed keeps one branch; the budgets run out and the flows freeze: 2 and
    // 3 first, then flow 1, which repeats their path.
    let more = rounds(&mut t, &mut stats, 2 * usize::from(FLOW_IDENTITIES) + 2).await;
    let keyed: Vec<&Vec<u16>> = more.iter().map(|r| &r.rekeyed).collect();
    assert!(
        more.iter().rev().take(3).all(|r| r.rekeyed.is_empty()),
        "frozen: {keyed:?}"
    );
    let last = FLOW_IDENTITIES - 1;
    assert_eq!(t.identities(), [0, last, last, last]);
    let all: Vec<Round> = first.into_iter().chain(second).chain(more).collect();
    let seen = seen_at(&all, 3);
    assert!(seen.values().all(|b| b.len() == 1), "{seen:?}");
    assert_eq!(stats.changes(), 0);
    assert_eq!(
        stats.responders()[&3],
        [v4(31), v4(32)].into(),
        "never shrinks"
    );
    // The engine holds the four current identities only; every one given up was released.
    let current: Vec<u16> = t
        .identities()
        .iter()
        .enumerate()
        .map(|(f, i)| wire_flow(f as u16, *i))
        .collect();
    assert_eq!(held(), current);
    let closed = path.closed.lock().clone();
    assert_eq!(closed.len(), 3 * usize::from(last), "{closed:?}");
    drop(t);
    assert!(
        path.holds.lock().is_empty(),
        "the tracer's end releases the rest"
    );
}

#[tokio::test(start_paused = true)]
async fn one_flow_is_never_rekeyed_and_keeps_one_branch() {
    let path = FakePath::new(v4(100), ecmp_at_3(first_identities_on_branch_0));
    let mut t = tracer(&path, PathOptions::default());
    let mut stats = PathStats::new();
    let all = rounds(&mut t, &mut stats, 12).await;
    assert!(all.iter().all(|r| r.rekeyed.is_empty()));
    assert_eq!(t.identities(), [0]);
    let flows: std::collections::BTreeSet<u16> = path.log.lock().iter().map(|l| l.1).collect();
    assert_eq!(flows, [0].into(), "one flow on the wire");
    assert_eq!(seen_at(&all, 3)[&(0, 0)], [v4(31)].into());
    assert_eq!(stats.changes(), 0);
}

#[tokio::test(start_paused = true)]
async fn flows_on_distinct_branches_keep_their_identities() {
    // Flow numbers alternate branches: flows 0 and 1 see different paths from the start.
    let path = FakePath::new(v4(100), ecmp_at_3(|wire| usize::from(wire % 2 == 1)));
    let options = PathOptions {
        flows: 2,
        ..PathOptions::default()
    };
    let mut t = tracer(&path, options);
    let mut stats = PathStats::new();
    let all = rounds(&mut t, &mut stats, 5).await;
    assert!(all.iter().all(|r| r.rekeyed.is_empty()));
    assert_eq!(t.identities(), [0, 0]);
    assert!(path.closed.lock().is_empty());
}

/// The re-key decision on what the flows saw: a flow is re-keyed only when another kept flow
/// saw the same responder at every TTL it has an answer for (an unanswered TTL tells nothing),
/// and never past its budget.
#[tokio::test(start_paused = true)]
async fn only_a_flow_whose_answers_another_flow_covers_is_rekeyed() {
    let path = FakePath::new(v4(100), five_hops());
    let options = PathOptions {
        flows: 3,
        ..PathOptions::default()
    };
    let mut t = tracer(&path, options);
    let probe = |flow: u16, ttl: u8, responder: Option<u8>| HopProbe {
        round: 1,
        ttl,
        flow,
        identity: 0,
        at: SystemTime::UNIX_EPOCH,
        result: if responder.is_some() {
            HopResult::TimeExceeded
        } else {
            HopResult::Timeout
        },
        responder: responder.map(v4),
        rtt: None,
        icmp_type: None,
        error: None,
        reason: None,
    };
    // Flow 0: 1, 2, 3. Flow 1: 1, (timeout), 3: covered by flow 0. Flow 2: 1, 9: its own.
    let probes = vec![
        probe(0, 1, Some(1)),
        probe(0, 2, Some(2)),
        probe(0, 3, Some(3)),
        probe(1, 1, Some(1)),
        probe(1, 2, None),
        probe(1, 3, Some(3)),
        probe(2, 1, Some(1)),
        probe(2, 2, Some(9)),
    ];
    assert_eq!(t.explore(1, &probes, None), [1]);
    assert_eq!(t.identities(), [0, 1, 0]);
    // Flow 1's new identity sees what flow 2 saw: of two alike, the lowest keeps its identity.
    let mut probes = vec![probe(1, 1, Some(1)), probe(1, 2, Some(9))];
    for p in &mut probes {
        (p.round, p.identity) = (2, 1);
    }
    assert_eq!(t.explore(2, &probes, None), [2]);
    assert_eq!(t.identities(), [0, 1, 1]);
    // Flow 2's new identity saw nothing yet: not re-keyed.
    assert_eq!(t.explore(3, &[], None), Vec::<u16>::new());
    // A flow at the end of its budget stays.
    t.flows[1].identity = FLOW_IDENTITIES - 1;
    t.flows[1].seen.clear();
    let dup = vec![probe(0, 1, Some(1)), {
        let mut p = probe(1, 1, Some(1));
        p.identity = FLOW_IDENTITIES - 1;
        p
    }];
    assert_eq!(t.explore(4, &dup, None), Vec::<u16>::new());
}

/// What one flow identity sees, replaced, is a change; a new identity seeing another responder
/// at a TTL is discovery.
#[test]
fn a_new_identity_is_discovery_and_a_replaced_responder_a_change() {
    let probe = |round: u64, identity: u8, responder: u8| HopProbe {
        round,
        ttl: 1,
        flow: 0,
        identity,
        at: SystemTime::UNIX_EPOCH,
        result: HopResult::Reply,
        responder: Some(v4(responder)),
        rtt: Some(Duration::from_millis(1)),
        icmp_type: None,
        error: None,
        reason: None,
    };
    let round = |n: u64, probes: Vec<HopProbe>| Round {
        number: n,
        probes,
        reached_at: Some(1),
        rekeyed: Vec::new(),
    };
    let mut st = PathStats::new();
    assert!(!st.add_round(&round(1, vec![probe(1, 0, 1)])));
    let id = st.path_id().map(str::to_owned);
    // Flow 0 re-keyed: its identity 1 sees responder 2.
    assert!(!st.add_round(&round(2, vec![probe(2, 1, 2)])));
    assert_eq!(st.changes(), 0);
    assert_ne!(st.path_id().map(str::to_owned), id);
    assert_eq!(st.responders()[&1], [v4(1), v4(2)].into());
    // Identity 1 now sees responder 3: a change.
    assert!(st.add_round(&round(3, vec![probe(3, 1, 3)])));
    assert_eq!(st.changes(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_path_change_during_exploration_counts_once() {
    let (path, mut t) = four_flows_whose_first_identities_share_a_branch();
    let mut stats = PathStats::new();
    rounds(&mut t, &mut stats, 2).await;
    assert_eq!(stats.changes(), 0);
    let before = stats.path_id().map(str::to_owned);
    // Every flow's TTL 2 moves while flows 2 and 3 are still being re-keyed.
    path.hops.lock()[1].branches = vec![v4(22)];
    rounds(&mut t, &mut stats, 4).await;
    assert_eq!(stats.changes(), 1);
    assert_ne!(stats.path_id().map(str::to_owned), before);
    // Only the new path at TTL 2: no retired identity remembers the old one.
    assert_eq!(stats.responders()[&2], [v4(22)].into());
    assert_eq!(stats.responders()[&3], [v4(31), v4(32)].into());
}
