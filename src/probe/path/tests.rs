//! The tracer and its stats against a scripted path (tokio time, paused).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::*;
use crate::engine::{
    EventKind, EventSink, IcmpErrorInfo, IcmpErrorKind, Pinger, ProbeEvent, ProbeSpec, ReplyInfo,
    SendError, SocketOptions, Transport,
};

mod ecmp;

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
