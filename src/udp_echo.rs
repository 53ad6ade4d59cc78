//! The UDP echo responder (`serve --udp-echo.listen-address`): answers pingscope's UDP echo
//! probes, so two instances measure UDP loss and latency both ways.
//!
//! It answers only well-formed probe datagrams (the token of [`crate::engine::udp`], direction
//! request, at most [`MAX_ECHO`] bytes), with the same datagram marked as a reply: never larger
//! than the request, and never an answer to an answer, so two responders cannot loop. Replies
//! are rate-limited ([`MAX_REPLIES_PER_SECOND`], a token bucket with a one-second burst); what
//! it drops is counted. Its memory is one receive buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::engine::udp::{MAX_ECHO, answer_echo};

/// Most replies per second, over all senders.
pub const MAX_REPLIES_PER_SECOND: u32 = 10_000;

/// What the responder did, for logs and tests.
#[derive(Debug, Default)]
pub struct EchoCounters {
    /// Datagrams answered.
    pub answered: AtomicU64,
    /// Datagrams that were not probe requests (malformed, oversized, replies).
    pub ignored: AtomicU64,
    /// Probe requests dropped by the rate limit.
    pub limited: AtomicU64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(MAX_REPLIES_PER_SECOND);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Binds the responder's socket.
pub async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Answers probe datagrams on `socket` until `shutdown`.
pub async fn serve(socket: UdpSocket, counters: Arc<EchoCounters>, shutdown: CancellationToken) {
    // One byte more than the largest answered datagram tells an oversized one apart.
    let mut buf = vec![0u8; MAX_ECHO + 1];
    let mut bucket = Bucket {
        tokens: f64::from(MAX_REPLIES_PER_SECOND),
        at: Instant::now(),
    };
    loop {
        let got = tokio::select! {
            () = shutdown.cancelled() => return,
            got = socket.recv_from(&mut buf) => got,
        };
        let (len, from) = match got {
            Ok(g) => g,
            Err(e) => {
                // ICMP errors for earlier replies surface here on some kernels; keep serving.
                tracing::debug!(error = %e, "UDP echo receive failed");
                continue;
            }
        };
        let datagram = &mut buf[..len];
        if !answer_echo(datagram) {
            counters.ignored.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !bucket.take(Instant::now()) {
            counters.limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match socket.try_send_to(datagram, from) {
            Ok(_) => {
                counters.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, peer = %from, "UDP echo reply not sent"),
        }
    }
}
