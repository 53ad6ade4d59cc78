//! Multi-hop paths in front of a destination: where a packet with a given TTL expires, the delay
//! and loss it meets on the way, each hop's ICMP rate limit, ECMP branches chosen by the flow
//! hash, and a scheduled path change.
//!
//! A hop's `delay` and `loss` are the link's: they count for that hop and every later hop and the
//! destination. `icmp_rate_limit` and `silent` are the hop's own: they only decide whether *it*
//! sends time-exceeded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::packet::{IpPacket, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::profile::{splitmix, stream_seed};

/// Hops in one path at most (a TTL is a byte; real paths are under 32).
const MAX_HOPS: usize = 64;
/// ECMP branches of one hop at most.
const MAX_BRANCHES: usize = 16;
/// Per-destination streams and per-hop buckets kept at most; past that they start over.
const MAX_STATES: usize = 65_536;
/// Salt for the path's own random streams, so a path never shifts the destination's dice.
const PATH_SALT: u64 = 0x7061_7468_686f_7073;

/// The `path:` block of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// Hops before the destination, nearest first.
    pub hops: Vec<HopSpec>,
    /// When (after the responder's start or last reload) `then` replaces `hops`.
    #[serde(default, deserialize_with = "some_duration")]
    pub change_after: Option<Duration>,
    #[serde(default)]
    pub then: Option<Vec<HopSpec>>,
}

/// One hop, or (with `branches`) one ECMP hop whose branch is chosen by the flow hash.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopSpec {
    #[serde(default)]
    pub addr: Option<IpAddr>,
    /// Added to the RTT of this hop, every later hop and the destination.
    #[serde(default, with = "crate::profile::humantime_serde_opt")]
    pub delay: Duration,
    /// Forwarding loss 0..=1: a packet lost here reaches neither this hop nor anything after it.
    #[serde(default)]
    pub loss: f64,
    /// Time-exceeded messages per second from this hop (a one-token bucket); 0 = unlimited.
    #[serde(default)]
    pub icmp_rate_limit: f64,
    /// Forwards, but never sends time-exceeded.
    #[serde(default)]
    pub silent: bool,
    /// Bytes of the expired packet after its IP header that the time-exceeded quotes (RFC 792
    /// asks for 8); `None`: as much as fits.
    #[serde(default)]
    pub quote: Option<usize>,
    #[serde(default)]
    pub branches: Vec<HopSpec>,
}

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    crate::profile::humantime_serde_opt::deserialize(d).map(Some)
}

impl PathSpec {
    /// The first rule broken, as a message.
    pub fn validate(&self) -> Result<(), String> {
        if self.change_after.is_some() != self.then.is_some() {
            return Err("path: change_after and then go together".into());
        }
        for (name, hops) in [("hops", Some(&self.hops)), ("then", self.then.as_ref())] {
            let Some(hops) = hops else { continue };
            if hops.len() > MAX_HOPS {
                return Err(format!("path.{name}: at most {MAX_HOPS} hops"));
            }
            let mut total = Duration::ZERO;
            for (i, hop) in hops.iter().enumerate() {
                let at = format!("path.{name}[{i}]");
                if hop.branches.is_empty() {
                    hop.validate_single(&at)?;
                } else {
                    if hop.addr.is_some() || hop.branches.len() > MAX_BRANCHES {
                        return Err(format!(
                            "{at}: an ECMP hop has only branches, 1..={MAX_BRANCHES} of them"
                        ));
                    }
                    for (j, b) in hop.branches.iter().enumerate() {
                        b.validate_single(&format!("{at}.branches[{j}]"))?;
                    }
                }
                total += hop
                    .branches
                    .iter()
                    .map(|b| b.delay)
                    .max()
                    .unwrap_or(hop.delay);
            }
            if total > Duration::from_secs(3600) {
                return Err(format!("path.{name}: delays must add up to under one hour"));
            }
        }
        Ok(())
    }

    /// The hops in force `elapsed` after the start or the last reload.
    fn active(&self, elapsed: Duration) -> &[HopSpec] {
        match (&self.then, self.change_after) {
            (Some(then), Some(after)) if elapsed >= after => then,
            _ => &self.hops,
        }
    }
}

impl HopSpec {
    fn validate_single(&self, at: &str) -> Result<(), String> {
        if self.addr.is_none() || !self.branches.is_empty() {
            return Err(format!("{at}: a hop needs addr (branches do not nest)"));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("{at}: loss must be within 0..=1"));
        }
        if !(self.icmp_rate_limit.is_finite() && self.icmp_rate_limit >= 0.0) {
            return Err(format!("{at}: icmp_rate_limit must be 0 or more"));
        }
        Ok(())
    }

    /// This hop, or its branch for `flow` (hashed with the hop's position, so two ECMP hops
    /// on one path choose independently).
    fn pick(&self, flow: u64, position: usize) -> &HopSpec {
        if self.branches.is_empty() {
            return self;
        }
        let h = splitmix(flow ^ (position as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let i = usize::try_from(h % self.branches.len() as u64).unwrap_or(0);
        self.branches.get(i).unwrap_or(self)
    }
}

/// Where a packet ends up.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Past every hop: the destination answers per its profile, `delay` later.
    Destination { delay: Duration },
    /// Lost on the way into hop `hop` (1-based) at `addr`.
    Dropped { hop: u8, addr: IpAddr },
    /// The TTL ran out at hop `hop` (1-based), `delay` after arrival; its time-exceeded
    /// quotes `quote` bytes after the IP header (`None`: as much as fits).
    Expired {
        hop: u8,
        addr: IpAddr,
        delay: Duration,
        fate: HopFate,
        quote: Option<usize>,
    },
}

/// What an expiring hop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopFate {
    TimeExceeded,
    RateLimited,
    Silent,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ns: u64,
}

/// The paths' dice and rate-limit buckets; made anew at start and at every reload, which is
/// also when a scheduled change's clock starts.
#[derive(Debug)]
pub struct PathState {
    seed: u64,
    started_ns: u64,
    rngs: HashMap<IpAddr, StdRng>,
    buckets: HashMap<IpAddr, Bucket>,
}

impl PathState {
    pub fn new(seed: u64, started_ns: u64) -> Self {
        Self {
            seed,
            started_ns,
            rngs: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// Route a packet to `dst` with this flow hash and received TTL, arriving at `now_ns`
    /// (CLOCK_MONOTONIC). Without a path everything reaches the destination and nothing is drawn.
    pub fn route(
        &mut self,
        path: Option<&PathSpec>,
        dst: IpAddr,
        flow: u64,
        ttl: u8,
        now_ns: u64,
    ) -> Route {
        let Some(path) = path else {
            return Route::Destination {
                delay: Duration::ZERO,
            };
        };
        let elapsed = Duration::from_nanos(now_ns.saturating_sub(self.started_ns));
        if self.rngs.len() >= MAX_STATES && !self.rngs.contains_key(&dst) {
            self.rngs.clear();
        }
        let seed = stream_seed(self.seed ^ PATH_SALT, &dst);
        let rng = self
            .rngs
            .entry(dst)
            .or_insert_with(|| StdRng::seed_from_u64(seed));
        let mut delay = Duration::ZERO;
        for (i, spec) in path.active(elapsed).iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let hop = spec.pick(flow, i);
            // Validated: every hop that can be picked has an address.
            let Some(addr) = hop.addr else { continue };
            delay += hop.delay;
            if rng.random::<f64>() < hop.loss {
                return Route::Dropped { hop: n, addr };
            }
            if ttl <= n {
                let fate = if hop.silent {
                    HopFate::Silent
                } else if take_token(&mut self.buckets, addr, hop.icmp_rate_limit, now_ns) {
                    HopFate::TimeExceeded
                } else {
                    HopFate::RateLimited
                };
                return Route::Expired {
                    hop: n,
                    addr,
                    delay,
                    fate,
                    quote: hop.quote,
                };
            }
        }
        Route::Destination { delay }
    }
}

/// One token refilled at `rate` per second; true when a token was there to take.
fn take_token(buckets: &mut HashMap<IpAddr, Bucket>, addr: IpAddr, rate: f64, now: u64) -> bool {
    if rate <= 0.0 {
        return true;
    }
    if buckets.len() >= MAX_STATES && !buckets.contains_key(&addr) {
        buckets.clear();
    }
    let b = buckets.entry(addr).or_insert(Bucket {
        tokens: 1.0,
        last_ns: now,
    });
    let refill = now.saturating_sub(b.last_ns) as f64 * 1e-9 * rate;
    b.tokens = (b.tokens + refill).min(1.0);
    b.last_ns = b.last_ns.max(now);
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// What ECMP routers hash (Paris-traceroute style): addresses and protocol, plus for ICMP echo
/// the type, code, checksum and identifier (not the sequence, not the payload), for UDP and TCP
/// the ports. `None` for other protocols or a transport header too short to hold those fields.
pub fn flow_hash(ip: &IpPacket<'_>) -> Option<u64> {
    let fields = match ip.proto {
        PROTO_ICMP | PROTO_ICMPV6 => ip.l4.get(..6)?,
        PROTO_UDP | PROTO_TCP => ip.l4.get(..4)?,
        _ => return None,
    };
    let addr = |a: IpAddr| match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    // FNV-1a: stable across Rust releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let (src, dst) = (addr(ip.src), addr(ip.dst));
    for b in src.iter().chain(&dst).chain(&[ip.proto]).chain(fields) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    Some(h)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(json: &str) -> PathSpec {
        let p: PathSpec = serde_json::from_str(json).unwrap();
        p.validate().unwrap();
        p
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn ttl_picks_the_hop_and_delays_add_up() {
        let p = spec(
            r#"{"hops":[{"addr":"198.18.10.1","delay":"1ms"},{"addr":"198.18.10.2","delay":"2ms"},
                {"addr":"198.18.10.3","silent":true}]}"#,
        );
        let mut s = PathState::new(1, 0);
        let dst = a("198.18.0.9");
        let expired = |hop: u8, addr: &str, ms: u64, fate| Route::Expired {
            hop,
            addr: a(addr),
            delay: Duration::from_millis(ms),
            fate,
            quote: None,
        };
        assert_eq!(
            s.route(Some(&p), dst, 1, 1, 0),
            expired(1, "198.18.10.1", 1, HopFate::TimeExceeded)
        );
        assert_eq!(
            s.route(Some(&p), dst, 1, 2, 0),
            expired(2, "198.18.10.2", 3, HopFate::TimeExceeded)
        );
        assert_eq!(
            s.route(Some(&p), dst, 1, 3, 0),
            expired(3, "198.18.10.3", 3, HopFate::Silent)
        );
        assert_eq!(
            s.route(Some(&p), dst, 1, 64, 0),
            Route::Destination {
                delay: Duration::from_millis(3)
            }
        );
        assert_eq!(
            s.route(None, dst, 1, 1, 0),
            Route::Destination {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn loss_persists_and_rate_limits_do_not() {
        let p = spec(
            r#"{"hops":[{"addr":"198.18.10.1","loss":0.5},{"addr":"198.18.10.2","icmp_rate_limit":10}]}"#,
        );
        let mut s = PathState::new(3, 0);
        let dst = a("198.18.0.9");
        let n = 4000;
        let reached = (0..n)
            .filter(|_| matches!(s.route(Some(&p), dst, 1, 64, 0), Route::Destination { .. }))
            .count();
        // Binomial(4000, 0.5): sd 31.6; ±5 sd.
        assert!((1842..=2158).contains(&reached), "reached {reached}");
        // Hop 2 at 10/s: one answer at t=0, none 50 ms later, one again after 100 ms.
        let mut s = PathState::new(3, 0);
        let p = spec(
            r#"{"hops":[{"addr":"198.18.10.1"},{"addr":"198.18.10.2","icmp_rate_limit":10}]}"#,
        );
        let fate = |s: &mut PathState, t: u64| match s.route(Some(&p), dst, 1, 2, t) {
            Route::Expired { fate, .. } => fate,
            r => panic!("{r:?}"),
        };
        assert_eq!(fate(&mut s, 0), HopFate::TimeExceeded);
        assert_eq!(fate(&mut s, 50 * MS), HopFate::RateLimited);
        assert_eq!(fate(&mut s, 101 * MS), HopFate::TimeExceeded);
        // The limit is the hop's own: the destination still answers every packet.
        assert!(matches!(
            s.route(Some(&p), dst, 1, 3, 102 * MS),
            Route::Destination { .. }
        ));
    }

    #[test]
    fn ecmp_branch_follows_the_flow_and_the_path_changes_on_schedule() {
        let p = spec(
            r#"{"hops":[{"branches":[{"addr":"198.18.11.1"},{"addr":"198.18.12.1"}]}],
                "change_after":"30s","then":[{"addr":"198.18.13.1"},{"addr":"198.18.13.2"}]}"#,
        );
        let mut s = PathState::new(0, 5);
        let dst = a("198.18.0.9");
        let hop1 = |s: &mut PathState, flow: u64, t: u64| match s.route(Some(&p), dst, flow, 1, t) {
            Route::Expired { addr, .. } => addr,
            r => panic!("{r:?}"),
        };
        let mut seen = std::collections::BTreeSet::new();
        for flow in 0..64u64 {
            let first = hop1(&mut s, flow, 5);
            assert_eq!(hop1(&mut s, flow, 6), first, "one flow, one branch");
            seen.insert(first);
        }
        assert_eq!(seen.len(), 2, "both branches used: {seen:?}");
        assert_eq!(hop1(&mut s, 0, 30_000 * MS + 5), a("198.18.13.1"));
        assert!(matches!(
            s.route(Some(&p), dst, 0, 2, 30_000 * MS + 5),
            Route::Expired { hop: 2, .. }
        ));
    }

    #[test]
    fn bad_paths_are_rejected() {
        for (json, needle) in [
            (r#"{"hops":[{"delay":"1ms"}]}"#, "needs addr"),
            (r#"{"hops":[{"addr":"198.18.1.1","loss":2}]}"#, "loss"),
            (r#"{"hops":[{"branches":[{"branches":[]}]}]}"#, "needs addr"),
            (
                r#"{"hops":[{"addr":"198.18.1.1","branches":[{"addr":"198.18.1.2"}]}]}"#,
                "only branches",
            ),
            (r#"{"hops":[],"change_after":"1s"}"#, "go together"),
            (
                r#"{"hops":[{"addr":"198.18.1.1","icmp_rate_limit":-1}]}"#,
                "icmp_rate_limit",
            ),
        ] {
            let p: PathSpec = serde_json::from_str(json).unwrap();
            let err = p.validate().unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn flow_hash_ignores_sequence_and_payload_but_not_identifier() {
        let build = |id: u16, seq: u16, payload: &[u8], csum: u16| {
            let mut l4 = vec![8, 0];
            l4.extend_from_slice(&csum.to_be_bytes());
            l4.extend_from_slice(&id.to_be_bytes());
            l4.extend_from_slice(&seq.to_be_bytes());
            l4.extend_from_slice(payload);
            l4
        };
        let hash = |l4: &[u8], proto: u8| {
            flow_hash(&IpPacket {
                src: a("198.18.0.1"),
                dst: a("198.18.0.9"),
                ttl: 1,
                tos: 0,
                proto,
                l4,
                raw: &[],
            })
        };
        let base = hash(&build(1, 1, b"aa", 7), PROTO_ICMP);
        assert_eq!(base, hash(&build(1, 2, b"bb", 7), PROTO_ICMP));
        assert_ne!(base, hash(&build(2, 1, b"aa", 7), PROTO_ICMP));
        assert_ne!(base, hash(&build(1, 1, b"aa", 8), PROTO_ICMP), "checksum");
        let udp = |sport: u16, csum: u16| {
            let mut l4 = sport.to_be_bytes().to_vec();
            l4.extend_from_slice(&[0x82, 0x9a, 0, 10]);
            l4.extend_from_slice(&csum.to_be_bytes());
            l4.extend_from_slice(b"xy");
            hash(&l4, PROTO_UDP)
        };
        assert_eq!(udp(4000, 1), udp(4000, 2));
        assert_ne!(udp(4000, 1), udp(4001, 1));
        assert_eq!(hash(&[0; 3], PROTO_UDP), None);
    }
}
