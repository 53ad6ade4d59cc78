//! The recent paths of one monitored address: a bounded ring of (time, path id, responders per
//! TTL), a new entry whenever the path id moves. Pure and synchronous, like [`super::stats`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::SystemTime;

use super::PathStats;

/// Entries kept per monitored address.
pub const HISTORY_LEN: usize = 32;

/// One path the address took, from `at` on.
#[derive(Clone, Debug, PartialEq)]
pub struct PathEntry {
    /// When the round that showed it ended.
    pub at: SystemTime,
    /// Its id (as `pingscope_path_info{path_id}`).
    pub path_id: String,
    /// The TTL at which the destination answered, if it did.
    pub length: Option<u8>,
    /// Per TTL up to the destination, the responders seen there (empty: none answered).
    pub hops: BTreeMap<u8, BTreeSet<IpAddr>>,
    /// True when a change led to it (one that `pingscope_path_changes_total` counted, or the
    /// round completing it): a known responder was replaced or the length changed. False for
    /// the first path and for a responder first seen (or forgotten after silence), which move
    /// the id without being a change.
    pub changed: bool,
}

/// The last [`HISTORY_LEN`] (or a chosen number of) paths, oldest first.
#[derive(Clone, Debug)]
pub struct PathHistory {
    entries: VecDeque<PathEntry>,
    capacity: usize,
}

impl Default for PathHistory {
    fn default() -> Self {
        Self::new(HISTORY_LEN)
    }
}

impl PathHistory {
    /// An empty history of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: VecDeque::with_capacity(capacity.min(HISTORY_LEN)),
            capacity,
        }
    }

    /// Notes the path `stats` holds after a round that ended `at` (`changed`: whether that
    /// round changed the path, [`PathStats::changing`]). Returns true when this added an entry.
    pub fn note(&mut self, stats: &PathStats, changed: bool, at: SystemTime) -> bool {
        let Some(id) = stats.path_id() else {
            return false;
        };
        if self.entries.back().is_some_and(|e| e.path_id == id) {
            return false;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(PathEntry {
            at,
            path_id: id.to_owned(),
            length: stats.length(),
            hops: stats.responders(),
            changed,
        });
        true
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &PathEntry> {
        self.entries.iter()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before the first round.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{HopProbe, HopResult, Round};
    use super::*;

    fn round(number: u64, hops: &[[u8; 4]]) -> Round {
        let probes: Vec<HopProbe> = hops
            .iter()
            .enumerate()
            .map(|(i, a)| HopProbe {
                round: number,
                ttl: u8::try_from(i + 1).unwrap_or(u8::MAX),
                flow: 0,
                identity: 0,
                at: SystemTime::UNIX_EPOCH,
                result: if i + 1 == hops.len() {
                    HopResult::Reply
                } else {
                    HopResult::TimeExceeded
                },
                responder: Some(IpAddr::from(*a)),
                rtt: Some(Duration::from_millis(1)),
                icmp_type: None,
                error: None,
                reason: None,
            })
            .collect();
        Round {
            number,
            probes,
            reached_at: u8::try_from(hops.len()).ok(),
            rekeyed: Vec::new(),
        }
    }

    const A: [[u8; 4]; 3] = [[198, 18, 10, 1], [198, 18, 10, 2], [198, 18, 0, 9]];
    const B: [[u8; 4]; 3] = [[198, 18, 20, 1], [198, 18, 20, 2], [198, 18, 0, 9]];

    #[test]
    fn an_entry_per_path_id_with_the_counted_changes_marked() {
        let mut stats = PathStats::new();
        let mut h = PathHistory::default();
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut feed = |n: u64, hops: &[[u8; 4]], h: &mut PathHistory| {
            let changed = stats.add_round(&round(n, hops));
            h.note(&stats, changed, t(n))
        };
        assert!(feed(1, &A, &mut h), "the first path is an entry");
        assert!(!feed(2, &A, &mut h), "the same path adds nothing");
        assert!(feed(3, &B, &mut h), "a new path");
        assert!(!feed(4, &B, &mut h));
        assert!(feed(5, &A, &mut h), "and back");
        let e: Vec<&PathEntry> = h.entries().collect();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e.iter().map(|e| e.changed).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(e[0].path_id, e[2].path_id);
        assert_ne!(e[0].path_id, e[1].path_id);
        assert_eq!(e[1].at, t(3));
        assert_eq!(e[1].length, Some(3));
        assert_eq!(
            e[1].hops[&1],
            BTreeSet::from([IpAddr::from([198, 18, 20, 1])])
        );
    }

    #[test]
    fn keeps_only_the_newest_entries() {
        let mut stats = PathStats::new();
        let mut h = PathHistory::new(4);
        for n in 1..=50u64 {
            let hops = if n % 2 == 0 { &A } else { &B };
            let changed = stats.add_round(&round(n, hops));
            assert!(h.note(
                &stats,
                changed,
                SystemTime::UNIX_EPOCH + Duration::from_secs(n)
            ));
            assert!(h.len() <= 4);
        }
        let at: Vec<SystemTime> = h.entries().map(|e| e.at).collect();
        let want: Vec<SystemTime> = (47..=50)
            .map(|n| SystemTime::UNIX_EPOCH + Duration::from_secs(n))
            .collect();
        assert_eq!(at, want);
        assert!(!h.is_empty());
    }

    #[test]
    fn nothing_before_a_round() {
        let mut h = PathHistory::default();
        assert!(!h.note(&PathStats::new(), false, SystemTime::UNIX_EPOCH));
        assert!(h.is_empty());
    }
}
