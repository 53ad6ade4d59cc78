//! Per-hop figures of a path probe, pure and synchronous: rounds in, summaries out.
//!
//! - Per (TTL, responder): sent, lost, last/avg/best/worst/stdev RTT. A lost probe has no
//!   responder; it is charged to the responder its flow identity last saw at that TTL (a flow
//!   identity is stable, so that is the router that dropped it), or to the unknown responder
//!   (`None`, mtr's `???`).
//! - Loss that persists: the loss a hop shares with every later TTL up to the destination. A
//!   router that rate-limits its ICMP or does not answer shows loss the later hops do not: its
//!   loss does not persist, and is no sign of a problem on the path.
//! - The path: per TTL up to the destination, the set of responders the flow identities last
//!   saw there; its id is a stable hash (FNV-1a, the same in every build) of that sequence. A
//!   change is what one flow identity (flow and identity, [`super::HopProbe::identity`]) saw at a
//!   TTL replaced by another responder, or a new path length. A responder first seen at a TTL,
//!   by a new identity of a re-keyed flow or after silence, is discovery, not a change: it moves
//!   the id without counting; so does one forgotten after [`FORGET_ROUNDS`] rounds of silence.
//!   What the old identity of a re-keyed flow ([`super::Round::rekeyed`]) saw is dropped at
//!   once: another flow saw all of it, so the path loses nothing, and a path that changes later
//!   is not shown with responders only a retired identity remembers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::{HopResult, Round};
pub use crate::sample::{HopRtt, HopSummary};

/// Rounds after which a (TTL, flow identity) that no longer answers forgets its responder.
pub const FORGET_ROUNDS: u64 = 10;

/// Running figures of one (TTL, responder).
#[derive(Clone, Debug, Default, PartialEq)]
struct Hop {
    sent: u64,
    lost: u64,
    last: Option<Duration>,
    best: Option<Duration>,
    worst: Option<Duration>,
    // Welford's running mean and sum of squares, in seconds.
    mean: f64,
    m2: f64,
    n: u64,
}

impl Hop {
    fn add(&mut self, rtt: Duration) {
        self.last = Some(rtt);
        self.best = Some(self.best.map_or(rtt, |b| b.min(rtt)));
        self.worst = Some(self.worst.map_or(rtt, |w| w.max(rtt)));
        self.n += 1;
        let x = rtt.as_secs_f64();
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
}

/// (TTL, flow, identity): what one flow identity saw at one TTL.
type Key = (u8, u16, u8);

/// Everything known about one path so far.
#[derive(Clone, Debug, Default)]
pub struct PathStats {
    hops: BTreeMap<(u8, Option<IpAddr>), Hop>,
    /// Per TTL: (sent, lost), every responder together.
    ttls: BTreeMap<u8, (u64, u64)>,
    /// Per (TTL, flow, identity): the responder last seen and the round it was seen in.
    last: BTreeMap<Key, (IpAddr, u64)>,
    length: Option<u8>,
    id: Option<String>,
    changes: u64,
    /// Whether the last round changed something, and the (TTL, flow, identity)s whose responder
    /// the change has replaced so far: a round that straddles a change (some TTLs probed before
    /// it, some after) and the round that completes it replace different ones, and are one
    /// change; a path that flaps back replaces the same ones again, and is another.
    changing: bool,
    change_keys: BTreeSet<Key>,
    rounds: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike the std hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl PathStats {
    /// Empty figures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one finished round in; returns true when a path change begins in it (a round
    /// that completes the last round's change, replacing other hops than it did, is the same
    /// change).
    pub fn add_round(&mut self, round: &Round) -> bool {
        self.rounds += 1;
        let mut replaced = BTreeSet::new();
        for p in &round.probes {
            if p.result == HopResult::SendError {
                continue;
            }
            let key = (p.ttl, p.flow, p.identity);
            let who = match p.responder {
                Some(r) => {
                    if self.last.get(&key).is_some_and(|(old, _)| *old != r) {
                        replaced.insert(key);
                    }
                    self.last.insert(key, (r, round.number));
                    Some(r)
                }
                None => self.last.get(&key).map(|(r, _)| *r),
            };
            let t = self.ttls.entry(p.ttl).or_default();
            t.0 += 1;
            let hop = self.hops.entry((p.ttl, who)).or_default();
            hop.sent += 1;
            match p.rtt {
                Some(rtt) if p.answered() => hop.add(rtt),
                _ => {
                    hop.lost += 1;
                    t.1 += 1;
                }
            }
        }
        self.last.retain(|(_, flow, _), (_, seen)| {
            round.number.saturating_sub(*seen) < FORGET_ROUNDS && !round.rekeyed.contains(flow)
        });
        let mut changed = !replaced.is_empty();
        if let Some(len) = round.reached_at {
            if self.length.is_some_and(|l| l != len) {
                changed = true;
            }
            self.length = Some(len);
        }
        if let Some(len) = self.length {
            self.last.retain(|(ttl, _, _), _| *ttl <= len);
        }
        self.id = Some(self.compute_id());
        let continues = self.changing && self.change_keys.is_disjoint(&replaced);
        let begins = changed && !continues;
        if begins {
            self.changes += 1;
            self.change_keys = replaced;
        } else if changed {
            self.change_keys.extend(replaced);
        } else {
            self.change_keys.clear();
        }
        self.changing = changed;
        begins
    }

    /// True when the last round changed the path: it began a change or went on with one.
    pub fn changing(&self) -> bool {
        self.changing
    }

    /// Per TTL up to the destination, the responders the flows last saw there (empty: none).
    pub fn responders(&self) -> BTreeMap<u8, BTreeSet<IpAddr>> {
        let mut out: BTreeMap<u8, BTreeSet<IpAddr>> = BTreeMap::new();
        for &ttl in self.ttls.keys() {
            if self.length.is_none_or(|l| ttl <= l) {
                out.entry(ttl).or_default();
            }
        }
        for ((ttl, _, _), (ip, _)) in &self.last {
            out.entry(*ttl).or_default().insert(*ip);
        }
        out
    }

    fn compute_id(&self) -> String {
        let text: Vec<String> = self
            .responders()
            .iter()
            .map(|(ttl, set)| {
                let ips: Vec<String> = set.iter().map(IpAddr::to_string).collect();
                format!(
                    "{ttl}={}",
                    if ips.is_empty() {
                        "*".into()
                    } else {
                        ips.join(",")
                    }
                )
            })
            .collect();
        format!("{:016x}", fnv1a(&text.join(";")))
    }

    /// The path id: a hash of the responder sequence; `None` before the first round.
    pub fn path_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The TTL at which the destination answered last (the path's length in hops).
    pub fn length(&self) -> Option<u8> {
        self.length
    }

    /// Path changes seen.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Rounds folded in.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Loss ratio of a TTL, every responder together.
    fn ttl_loss(&self, ttl: u8) -> Option<f64> {
        self.ttls
            .get(&ttl)
            .filter(|(sent, _)| *sent > 0)
            .map(|(sent, lost)| *lost as f64 / *sent as f64)
    }

    /// One row per (TTL, responder), in TTL order, up to the destination.
    pub fn summaries(&self) -> Vec<HopSummary> {
        self.hops
            .iter()
            .filter(|((ttl, _), _)| self.length.is_none_or(|l| *ttl <= l))
            .map(|(&(ttl, responder), h)| {
                let loss = if h.sent > 0 {
                    h.lost as f64 / h.sent as f64
                } else {
                    0.0
                };
                let later = self
                    .ttls
                    .keys()
                    .filter(|t| **t > ttl && self.length.is_none_or(|l| **t <= l))
                    .filter_map(|t| self.ttl_loss(*t))
                    .fold(f64::INFINITY, f64::min);
                let persistent = loss.min(later);
                let rtt_ms = match (h.last, h.best, h.worst) {
                    (Some(last), Some(best), Some(worst)) => Some(HopRtt {
                        last: ms(last),
                        avg: h.mean * 1e3,
                        best: ms(best),
                        worst: ms(worst),
                        stdev: (h.m2 / h.n as f64).max(0.0).sqrt() * 1e3,
                    }),
                    _ => None,
                };
                HopSummary {
                    ttl,
                    responder,
                    sent: h.sent,
                    lost: h.lost,
                    loss_ratio: loss,
                    persistent_loss_ratio: persistent,
                    loss_persists: loss > 0.0 && persistent * 2.0 >= loss,
                    rtt_ms,
                }
            })
            .collect()
    }
}
