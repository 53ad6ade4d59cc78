//! Pacing per responder, shared by tracers: routers rate-limit the ICMP errors they send to one
//! source (Linux: a burst of 6, then one a second per peer), so many path monitors through one
//! router must share what it answers rather than each pace only itself.
//!
//! A [`HopPacer`] keeps a token bucket per hop address. Before a probe whose TTL expired at a
//! router last round, the tracer takes a token of that router; without one the probe is not
//! sent this round (no sent, no loss), instead of provoking a drop the hop's loss would then
//! show. The destination is not paced here: its answers are replies, not errors, and the
//! tracer's own pace already spaces them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Default answers per second asked of one router, all path monitors together.
pub const DEFAULT_HOP_RATE: f64 = 50.0;
/// Default burst of one router's bucket.
pub const DEFAULT_HOP_BURST: u32 = 50;
/// Buckets kept before full, idle ones are dropped (a full bucket is the same as none).
const MAX_BUCKETS: usize = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Inner {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Inner {
    fn refill(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }
}

/// Token buckets per hop address. Cheap to clone; clones share the buckets.
#[derive(Clone, Debug)]
pub struct HopPacer {
    // One short critical section per paced probe (no await inside); a mutex, since every
    // take also writes.
    inner: Arc<Mutex<Inner>>,
}

impl Default for HopPacer {
    fn default() -> Self {
        Self::new(DEFAULT_HOP_RATE, DEFAULT_HOP_BURST)
    }
}

impl HopPacer {
    /// `rate` tokens a second per hop (at least one every hour), buckets of `burst` (at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let min = 1.0 / Duration::from_secs(3600).as_secs_f64();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                rate: if rate.is_finite() { rate.max(min) } else { min },
                burst: f64::from(burst.max(1)),
                buckets: HashMap::new(),
            })),
        }
    }

    /// Sets a new rate and burst (a reload); buckets keep their tokens, capped at the burst.
    pub fn configure(&self, rate: f64, burst: u32) {
        let fresh = Self::new(rate, burst);
        let (rate, burst) = {
            let f = fresh.inner.lock();
            (f.rate, f.burst)
        };
        let mut g = self.inner.lock();
        g.rate = rate;
        g.burst = burst;
        for b in g.buckets.values_mut() {
            b.tokens = b.tokens.min(burst);
        }
    }

    /// Takes a token of `hop` at `now`: true when the probe may go.
    pub fn try_take(&self, hop: IpAddr, now: Instant) -> bool {
        let mut g = self.inner.lock();
        if g.buckets.len() >= MAX_BUCKETS && !g.buckets.contains_key(&hop) {
            let inner = &*g;
            let keep: HashMap<IpAddr, Bucket> = inner
                .buckets
                .iter()
                .filter(|(_, b)| inner.refill(b, now) < inner.burst)
                .map(|(ip, b)| {
                    (
                        *ip,
                        Bucket {
                            tokens: b.tokens,
                            at: b.at,
                        },
                    )
                })
                .collect();
            g.buckets = keep;
        }
        let burst = g.burst;
        let tokens = match g.buckets.get(&hop) {
            Some(b) => g.refill(b, now),
            None => burst,
        };
        let (tokens, ok) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        g.buckets.insert(hop, Bucket { tokens, at: now });
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 10, d))
    }

    #[test]
    fn a_burst_then_the_rate_per_hop_and_hops_apart() {
        let t0 = Instant::now();
        let p = HopPacer::new(2.0, 3);
        let q = p.clone();
        // The burst, shared by clones; then nothing at the same instant.
        assert!(p.try_take(ip(1), t0));
        assert!(q.try_take(ip(1), t0));
        assert!(p.try_take(ip(1), t0));
        assert!(!q.try_take(ip(1), t0), "burst of 3 spent");
        // Another router has its own bucket.
        assert!(p.try_take(ip(2), t0));
        // 2 a second: one token after 500 ms, not before.
        assert!(!p.try_take(ip(1), t0 + Duration::from_millis(499)));
        assert!(p.try_take(ip(1), t0 + Duration::from_millis(600)));
        assert!(!p.try_take(ip(1), t0 + Duration::from_millis(600)));
        // Idle for long: back to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| p.try_take(ip(1), later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn configure_changes_rate_and_burst_for_every_clone() {
        let t0 = Instant::now();
        let p = HopPacer::new(50.0, 50);
        let q = p.clone();
        assert!(p.try_take(ip(1), t0));
        q.configure(1.0, 2);
        // The bucket held 49 tokens: capped at the new burst of 2.
        assert!(p.try_take(ip(1), t0));
        assert!(p.try_take(ip(1), t0));
        assert!(!p.try_take(ip(1), t0), "burst of 2");
        // One a second now, not 50.
        assert!(!p.try_take(ip(1), t0 + Duration::from_millis(900)));
        assert!(p.try_take(ip(1), t0 + Duration::from_millis(1000)));
        // A new router starts with the new burst.
        let taken = (0..10).filter(|_| p.try_take(ip(2), t0)).count();
        assert_eq!(taken, 2);
    }
}
