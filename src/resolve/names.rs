//! Reverse names (PTR) of hop responders, for the page's hop tables: a bounded cache that keeps
//! each answer for its record's TTL (capped), looks names up off the caller's path with a
//! timeout, and answers a reader within a time budget with what it knows by then.
//!
//! Nothing that probes waits on it: lookups start only when a reader (the path API) asks for
//! names, each runs in a task of its own, and at most [`MAX_LOOKUPS`] run at once. A name that
//! does not resolve (no PTR record, a failed or timed-out lookup) is remembered as none, and
//! readers show the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use super::Resolver;

/// Addresses whose names are kept by default.
pub const DEFAULT_CAPACITY: usize = 4096;
/// How long one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Lookups running at once; an address beyond that is looked up when asked for again.
pub const MAX_LOOKUPS: usize = 32;
/// The longest an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long a failed lookup (timeout, server failure) is remembered before it is tried again.
pub const FAILURE_TTL: Duration = Duration::from_secs(60);
/// The shortest an answer is kept (a TTL of 0 would ask again on every read).
pub const MIN_TTL: Duration = Duration::from_secs(5);

/// What the cache knows of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// Resolved: the name, or `None` when the address has none.
    Name(Option<String>),
    /// A lookup is under way.
    Pending,
    /// Never asked, or the answer expired.
    Unknown,
}

#[derive(Clone, Debug)]
struct Entry {
    /// `None` while a lookup is under way.
    name: Option<Option<String>>,
    until: Instant,
    /// For eviction: the read counter when it was last read or written.
    used: u64,
}

/// The pure part: entries by address, bounded, with expiry. Time is passed in.
#[derive(Debug)]
pub struct NameCache {
    entries: HashMap<IpAddr, Entry>,
    capacity: usize,
    clock: u64,
}

impl NameCache {
    /// An empty cache holding at most `capacity` addresses (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Addresses held (pending ones too).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What is known of `ip` at `now`.
    pub fn get(&mut self, ip: IpAddr, now: Instant) -> Known {
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(&ip) {
            Some(e) if e.name.is_none() => Known::Pending,
            Some(e) if e.until > now => {
                e.used = clock;
                Known::Name(e.name.clone().flatten())
            }
            _ => Known::Unknown,
        }
    }

    /// Marks `ip` as being looked up; false when it already is, or has an answer still valid.
    pub fn begin(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !matches!(self.get(ip, now), Known::Unknown) {
            return false;
        }
        self.make_room(ip, now);
        self.clock += 1;
        self.entries.insert(
            ip,
            Entry {
                name: None,
                until: now,
                used: self.clock,
            },
        );
        true
    }

    /// Records the answer for `ip`, valid until `until` (clamped to [`MIN_TTL`]..[`MAX_TTL`]
    /// from `now`).
    pub fn finish(&mut self, ip: IpAddr, name: Option<String>, until: Instant, now: Instant) {
        let until = until.clamp(now + MIN_TTL, now + MAX_TTL);
        self.make_room(ip, now);
        self.clock += 1;
        self.entries.insert(
            ip,
            Entry {
                name: Some(name),
                until,
                used: self.clock,
            },
        );
    }

    /// Forgets a lookup that will not finish (its task went away).
    pub fn abandon(&mut self, ip: IpAddr) {
        if self.entries.get(&ip).is_some_and(|e| e.name.is_none()) {
            self.entries.remove(&ip);
        }
    }

    /// Room for `ip`: expired answers go first, then the least recently used answer. Pending
    /// entries stay (at most [`MAX_LOOKUPS`] of them through [`ReverseNames`]).
    fn make_room(&mut self, ip: IpAddr, now: Instant) {
        if self.entries.contains_key(&ip) || self.entries.len() < self.capacity {
            return;
        }
        self.entries
            .retain(|_, e| e.name.is_none() || e.until > now);
        while self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| e.name.is_some())
                .min_by_key(|(_, e)| e.used)
                .map(|(ip, _)| *ip);
            match oldest {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    // Held only to read or write entries, never across an await.
    cache: Mutex<NameCache>,
    /// Wakes readers waiting for answers whenever one arrives.
    answered: Notify,
    lookups: Arc<Semaphore>,
    timeout: Duration,
}

/// Cheap-clone handle to the daemon's reverse-name cache.
#[derive(Clone, Debug)]
pub struct ReverseNames {
    shared: Arc<Shared>,
}

impl Default for ReverseNames {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, LOOKUP_TIMEOUT)
    }
}

impl ReverseNames {
    /// A cache of `capacity` addresses whose lookups give up after `timeout`.
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                cache: Mutex::new(NameCache::new(capacity)),
                answered: Notify::new(),
                lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
                timeout,
            }),
        }
    }

    /// The names of `ips` that resolve: those known now, and those whose lookup (started now
    /// through `resolver`, for the ones not known) answers within `budget`. Lookups still
    /// running then go on, and a later call finds their answers.
    pub async fn names(
        &self,
        resolver: &Resolver,
        ips: &[IpAddr],
        budget: Duration,
    ) -> HashMap<IpAddr, String> {
        let deadline = tokio::time::Instant::now() + budget;
        for ip in ips {
            self.start(resolver, *ip);
        }
        loop {
            let answered = self.shared.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let (names, pending) = self.known(ips);
            if !pending {
                return names;
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                return self.known(ips).0;
            }
        }
    }

    /// The names known now, and whether any of `ips` is still being looked up.
    fn known(&self, ips: &[IpAddr]) -> (HashMap<IpAddr, String>, bool) {
        let now = Instant::now();
        let mut cache = self.shared.cache.lock();
        let mut names = HashMap::new();
        let mut pending = false;
        for ip in ips {
            match cache.get(*ip, now) {
                Known::Name(Some(n)) => {
                    names.insert(*ip, n);
                }
                Known::Pending => pending = true,
                Known::Name(None) | Known::Unknown => {}
            }
        }
        (names, pending)
    }

    /// Starts looking `ip` up unless it is known or under way, or too many lookups run.
    fn start(&self, resolver: &Resolver, ip: IpAddr) {
        let Ok(permit) = self.shared.lookups.clone().try_acquire_owned() else {
            return;
        };
        if !self.shared.cache.lock().begin(ip, Instant::now()) {
            return;
        }
        let shared = self.shared.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // A lookup that never finishes (its task dropped) must not stay pending.
            let _guard = Abandon(shared.clone(), ip);
            let answer = tokio::time::timeout(shared.timeout, resolver.reverse(ip)).await;
            let now = Instant::now();
            let (name, until) = match answer {
                Ok(Ok(r)) => (r.name, r.valid_until),
                Ok(Err(_)) | Err(_) => (None, now + FAILURE_TTL),
            };
            shared.cache.lock().finish(ip, name, until, now);
            shared.answered.notify_waiters();
        });
    }
}

/// Forgets a pending lookup when its task ends without an answer.
struct Abandon(Arc<Shared>, IpAddr);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.cache.lock().abandon(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 10, last])
    }

    #[test]
    fn answers_last_for_their_ttl_within_the_bounds() {
        let mut c = NameCache::new(8);
        let t0 = Instant::now();
        assert_eq!(c.get(ip(1), t0), Known::Unknown);
        assert!(c.begin(ip(1), t0));
        assert!(!c.begin(ip(1), t0), "one lookup at a time");
        assert_eq!(c.get(ip(1), t0), Known::Pending);
        c.finish(
            ip(1),
            Some("r1.example".into()),
            t0 + Duration::from_secs(30),
            t0,
        );
        assert!(!c.begin(ip(1), t0), "a valid answer is not asked again");
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(c.get(ip(1), at(29)), Known::Name(Some("r1.example".into())));
        assert_eq!(c.get(ip(1), at(30)), Known::Unknown, "expired with its TTL");
        assert!(c.begin(ip(1), at(30)));
        // A TTL of 0 is kept MIN_TTL; a day is kept MAX_TTL; no name is an answer too.
        c.finish(ip(2), None, t0, t0);
        assert_eq!(
            c.get(ip(2), t0 + MIN_TTL - Duration::from_millis(1)),
            Known::Name(None)
        );
        assert_eq!(c.get(ip(2), t0 + MIN_TTL), Known::Unknown);
        c.finish(ip(3), Some("r3".into()), at(86_400), t0);
        assert_eq!(
            c.get(ip(3), t0 + MAX_TTL - Duration::from_secs(1)),
            Known::Name(Some("r3".into()))
        );
        assert_eq!(c.get(ip(3), t0 + MAX_TTL), Known::Unknown);
    }

    #[test]
    fn stays_bounded_evicting_expired_then_least_recently_used() {
        let mut c = NameCache::new(3);
        let t0 = Instant::now();
        let long = t0 + Duration::from_secs(600);
        c.finish(ip(1), Some("a".into()), long, t0);
        c.finish(ip(2), Some("b".into()), t0 + Duration::from_secs(10), t0);
        c.finish(ip(3), Some("c".into()), long, t0);
        // ip(2) expired: it goes first, though ip(1) was used least recently.
        let later = t0 + Duration::from_secs(20);
        c.finish(ip(4), Some("d".into()), long, later);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(ip(1), later), Known::Name(Some("a".into())));
        // Now ip(3) is the least recently used.
        c.finish(ip(5), Some("e".into()), long, later);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(ip(3), later), Known::Unknown);
        for i in 6..100 {
            c.finish(ip(i), None, long, later);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn pending_lookups_are_not_evicted_and_can_be_abandoned() {
        let mut c = NameCache::new(2);
        let t0 = Instant::now();
        assert!(c.begin(ip(1), t0));
        assert!(c.begin(ip(2), t0));
        c.finish(ip(3), Some("c".into()), t0 + Duration::from_secs(60), t0);
        assert_eq!(c.get(ip(1), t0), Known::Pending);
        assert_eq!(c.get(ip(2), t0), Known::Pending);
        c.abandon(ip(1));
        assert_eq!(c.get(ip(1), t0), Known::Unknown);
        assert!(!c.is_empty());
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_costs_the_budget_not_more() {
        // A UDP socket that never answers: every lookup times out.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let resolver = Resolver::with_servers_and_timeout(&[addr], Duration::from_millis(200))
            .unwrap_or_else(|e| panic!("{e}"));
        let names = ReverseNames::new(16, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let got = names
            .names(&resolver, &[ip(1), ip(2)], Duration::from_millis(100))
            .await;
        assert!(got.is_empty());
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        // The lookups end on their own timeout and are remembered as failed: no name, and
        // no new lookup until FAILURE_TTL.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (known, pending) = names.known(&[ip(1), ip(2)]);
        assert!(known.is_empty() && !pending);
        assert_eq!(
            names.shared.cache.lock().get(ip(1), Instant::now()),
            Known::Name(None)
        );
    }
}
