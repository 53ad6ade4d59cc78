//! ECMP discovery: flows that repeat another flow's path are re-keyed until the branches are
//! found, within each flow's budget of identities.

use super::*;
use crate::probe::path::tracer::wire_flow;

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
