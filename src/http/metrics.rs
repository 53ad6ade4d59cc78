//! The telemetry path: text by default, protobuf (native histograms) when the scraper asks,
//! gzip-compressed when it accepts that (as Prometheus always does).
//!
//! Encoding is the one CPU-heavy thing a scrape does (about 0.2 s of CPU at 10,000 targets, and
//! seconds at 50,000), so it runs on [`ENCODERS`] dedicated threads at a lower priority
//! ([`ENCODER_NICE`]): when the CPU is short, the runtime's workers that send probes go first and
//! the scrape takes longer, instead of the probes going out late. A few scrapes wait in line; past
//! [`QUEUE`] the answer is 503, which a scraper retries at its next interval.
//!
//! The body goes out as it is encoded, in pieces of [`PIECE_BYTES`] (compressed ones when gzip),
//! so a scrape does not hold its whole body; a body that fits in one piece is answered whole.

use std::io::{self, Write};
use std::sync::{Arc, OnceLock, mpsc};

use axum::BoxError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::compress;
use crate::metrics::{Format, Metrics, MetricsError};
use crate::state::App;

/// Encoder threads (two scrapers, such as a Prometheus HA pair, are served side by side).
const ENCODERS: usize = 2;
/// Scrapes that may wait for an encoder.
const QUEUE: usize = 8;
/// Niceness of the encoder threads (0 is the process's own, 19 the lowest priority).
const ENCODER_NICE: i32 = 10;

struct Job {
    metrics: Metrics,
    format: Format,
    gzip: bool,
    out: UnboundedSender<Piece>,
}

/// A piece of a scrape's body, as the encoder hands it over.
#[derive(Debug)]
enum Piece {
    /// Body bytes; more follow.
    More(Bytes),
    /// The body's last bytes.
    Last(Bytes),
    /// Encoding failed: the body stops here.
    Failed(MetricsError),
}

/// Body bytes handed over at a time. A scraper reads the body as it is encoded, so a scrape holds
/// a few pieces rather than its whole body (gzip at 10,000 targets: 1.6 MB, two dozen pieces);
/// one that reads slower than the encoder writes gets the pieces queued, as a whole body would be.
const PIECE_BYTES: usize = 64 * 1024;

/// The encoder's end of a body: fills a piece and hands it over when it is full.
struct Pieces {
    piece: Vec<u8>,
    out: UnboundedSender<Piece>,
}

impl Pieces {
    fn new(out: UnboundedSender<Piece>) -> Self {
        Self {
            piece: Vec::with_capacity(PIECE_BYTES),
            out,
        }
    }

    /// Hands the full piece over; fails when the scraper is gone, which stops the encoding.
    fn hand_over(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE_BYTES));
        self.out
            .send(Piece::More(Bytes::from(full)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the scraper is gone"))
    }

    /// Hands the rest over as the body's end.
    fn finish(self) {
        let _ = self.out.send(Piece::Last(Bytes::from(self.piece)));
    }
}

impl Write for Pieces {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.piece.len() == PIECE_BYTES {
            self.hand_over()?;
        }
        let n = data.len().min(PIECE_BYTES - self.piece.len());
        self.piece.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The encoders' queue, started on first use. `None` when no thread could be started; scrapes
/// then encode on the runtime's blocking pool.
fn encoders() -> Option<&'static mpsc::SyncSender<Job>> {
    static QUEUE_TX: OnceLock<Option<mpsc::SyncSender<Job>>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..ENCODERS {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("metrics-encoder-{i}"))
                    .spawn(move || encoder_loop(&rx));
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::warn!(error = %e, "cannot start a metrics encoder thread"),
                }
            }
            (started > 0).then_some(tx)
        })
        .as_ref()
}

fn encoder_loop(rx: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while encoding.
        let job = rx.lock().recv();
        let Ok(job) = job else { return };
        job.run();
        // What the scrape used (the compressor's state, pieces, copies of figures) is free now,
        // but glibc keeps it, in this thread's arena as much as anywhere: between scrapes it
        // would be resident for nothing.
        crate::state::release_free_heap();
    }
}

/// Lowers this thread's scheduling priority. On Linux, `setpriority(PRIO_PROCESS, tid)` applies
/// to the one thread. Failure only costs the priority, so it is logged, not fatal.
fn lower_priority() {
    let tid = nix::unistd::gettid().as_raw();
    let Ok(who) = libc::id_t::try_from(tid) else {
        return;
    };
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, ENCODER_NICE) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "cannot lower the metrics encoder's priority");
    }
}

impl Job {
    /// Encodes the body into pieces, compressed as it is encoded when the scraper accepts gzip.
    /// A scraper that went away stops it at the next full piece.
    fn run(self) {
        let failed = self.out.clone();
        let pieces = Pieces::new(self.out);
        let encoded = if self.gzip {
            compress::gzip_into(pieces, |w| self.metrics.encode_into(self.format, w))
        } else {
            let mut pieces = pieces;
            self.metrics
                .encode_into(self.format, &mut pieces)
                .map(|()| pieces)
        };
        match encoded {
            Ok(pieces) => pieces.finish(),
            Err(e) => {
                let _ = failed.send(Piece::Failed(e));
            }
        }
    }
}

/// Why a scrape got no body.
enum Failed {
    Busy,
    Gone,
}

/// Queues a scrape for an encoder; its body comes in pieces from the receiver returned.
fn encode(
    metrics: Metrics,
    format: Format,
    gzip: bool,
) -> Result<UnboundedReceiver<Piece>, Failed> {
    let (out, pieces) = unbounded_channel();
    let job = Job {
        metrics,
        format,
        gzip,
        out,
    };
    let Some(queue) = encoders() else {
        tokio::task::spawn_blocking(move || job.run());
        return Ok(pieces);
    };
    match queue.try_send(job) {
        Ok(()) => Ok(pieces),
        Err(mpsc::TrySendError::Full(_)) => Err(Failed::Busy),
        Err(mpsc::TrySendError::Disconnected(_)) => Err(Failed::Gone),
    }
}

/// The answer to a scrape whose body comes from `pieces`: whole when the encoder has finished by
/// its first piece, else streamed as the pieces come. Encoding that fails before the first piece
/// is a 500; after it, the body stops short (the connection is closed before the body's end),
/// which a scraper counts as a failed scrape.
async fn answer(content_type: &str, gzip: bool, mut pieces: UnboundedReceiver<Piece>) -> Response {
    match pieces.recv().await {
        Some(Piece::Last(body)) => compress::scrape_response(content_type, body, gzip),
        Some(Piece::More(first)) => {
            let rest = futures_util::stream::unfold(Some(pieces), |pieces| async move {
                let mut pieces = pieces?;
                let next = match pieces.recv().await {
                    Some(Piece::More(b)) => return Some((Ok(b), Some(pieces))),
                    Some(Piece::Last(b)) if b.is_empty() => return None,
                    Some(Piece::Last(b)) => Ok(b),
                    Some(Piece::Failed(e)) => {
                        tracing::error!(error = %e, "encoding metrics failed mid-body");
                        Err(BoxError::from(e))
                    }
                    None => {
                        tracing::error!("metrics encoder stopped mid-body");
                        Err(BoxError::from("the metrics encoder stopped"))
                    }
                };
                Some((next, None))
            });
            let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
            compress::scrape_response(content_type, Body::from_stream(body), gzip)
        }
        Some(Piece::Failed(e)) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {e}\n"),
            )
                .into_response()
        }
        None => stopped(),
    }
}

fn stopped() -> Response {
    tracing::error!("metrics encoder stopped");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "encoding metrics failed\n",
    )
        .into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = crate::metrics::negotiate(accept);
    let gzip = compress::accepts_gzip(&headers);
    match encode(app.metrics().clone(), format, gzip) {
        Ok(pieces) => answer(format.content_type(), gzip, pieces).await,
        Err(Failed::Busy) => {
            tracing::warn!(queued = QUEUE, "too many scrapes waiting; answering 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "too many scrapes in progress; retry later\n",
            )
                .into_response()
        }
        Err(Failed::Gone) => stopped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsOptions;

    /// Niceness of this process's threads whose name starts with `prefix` (field 19 of stat).
    fn nice_of_threads(prefix: &str) -> Vec<i32> {
        let mut found = Vec::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return found;
        };
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.trim().starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3, nice is field 19.
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            if let Some(nice) = after.split(' ').nth(16).and_then(|n| n.parse().ok()) {
                found.push(nice);
            }
        }
        found
    }

    /// The whole body of `response`, or why it stopped.
    async fn body_of(response: Response) -> Result<Vec<u8>, axum::Error> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map(|b| b.to_vec())
    }

    /// A registry with `n` targets that have probed, so its body is large.
    fn registry_of(n: u16) -> Metrics {
        use crate::engine::{EventKind, ProbeEvent, ReplyInfo};
        use crate::metrics::TargetLabels;
        use crate::resolve::Family as AddressFamily;
        let metrics = Metrics::new(MetricsOptions::default()).expect("registry");
        for i in 0..n {
            let [hi, lo] = i.to_be_bytes();
            let ip = std::net::IpAddr::from([198, 18, hi, lo]);
            let Ok(labels) = TargetLabels::new(format!("target-{i}"), ip, []) else {
                panic!("labels");
            };
            let t = metrics.target(&labels, "h.example", AddressFamily::Ip4);
            t.on_sent();
            t.on_event(&ProbeEvent {
                tag: 1,
                seq: 1,
                ip,
                at: std::time::SystemTime::UNIX_EPOCH,
                kind: EventKind::Reply(ReplyInfo {
                    rtt: std::time::Duration::from_micros(100 * u64::from(i)),
                    ttl: Some(64),
                    size: 64,
                    refused: false,
                }),
            });
        }
        metrics
    }

    #[tokio::test]
    async fn encodes_on_low_priority_threads_the_same_body() {
        let metrics = Metrics::new(MetricsOptions::default()).expect("registry");
        let direct = metrics.encode(Format::Text).expect("direct encode");
        let Ok(pieces) = encode(metrics.clone(), Format::Text, false) else {
            panic!("queued encode failed");
        };
        let queued = answer("text/plain", false, pieces).await;
        assert_eq!(body_of(queued).await.expect("body"), direct);
        // The thread that did not take the job may still be starting: wait for it, bounded.
        let mut nice = nice_of_threads("metrics-encoder");
        for _ in 0..200 {
            if nice.len() == ENCODERS && nice.iter().all(|n| *n == ENCODER_NICE) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            nice = nice_of_threads("metrics-encoder");
        }
        assert_eq!(nice.len(), ENCODERS, "encoder threads: {nice:?}");
        assert!(nice.iter().all(|n| *n == ENCODER_NICE), "{nice:?}");
    }

    #[tokio::test]
    async fn a_large_body_is_streamed_in_pieces_that_make_the_whole_body() {
        use axum::body::HttpBody as _;
        use std::io::Read;
        // Large enough that the gzip body takes more than one piece too.
        let metrics = registry_of(1000);
        let text = metrics.encode(Format::Text).expect("direct encode");
        assert!(text.len() > 20 * PIECE_BYTES, "{} bytes", text.len());
        for gzip in [false, true] {
            let Ok(pieces) = encode(metrics.clone(), Format::Text, gzip) else {
                panic!("queued encode failed");
            };
            let r = answer("text/plain", gzip, pieces).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                r.body().size_hint().exact(),
                None,
                "streamed, length unknown"
            );
            let body = body_of(r).await.expect("body");
            let body = if gzip {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice())
                    .read_to_end(&mut plain)
                    .expect("gzip");
                plain
            } else {
                body
            };
            assert!(
                body == text,
                "gzip {gzip}: {} against {} bytes",
                body.len(),
                text.len()
            );
        }
        // A body within one piece is answered whole, with its length.
        let small = registry_of(1);
        let Ok(pieces) = encode(small.clone(), Format::Protobuf, false) else {
            panic!("queued encode failed");
        };
        let r = answer("application/x-protobuf", false, pieces).await;
        let want = small.encode(Format::Protobuf).expect("direct encode");
        assert_eq!(r.body().size_hint().exact(), Some(want.len() as u64));
        assert_eq!(body_of(r).await.expect("body"), want);
    }

    #[tokio::test]
    async fn a_failure_before_the_first_piece_is_a_500_and_after_it_a_body_cut_short() {
        let failure = || {
            Piece::Failed(MetricsError::Write {
                source: io::Error::other("disk on fire"),
            })
        };
        let (tx, rx) = unbounded_channel();
        tx.send(failure()).unwrap();
        let r = answer("text/plain", false, rx).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(String::from_utf8_lossy(&body_of(r).await.unwrap()).contains("disk on fire"));

        for end in [Some(failure()), None] {
            let (tx, rx) = unbounded_channel();
            tx.send(Piece::More(Bytes::from_static(b"abc"))).unwrap();
            tx.send(Piece::More(Bytes::from_static(b"def"))).unwrap();
            if let Some(end) = end {
                tx.send(end).unwrap();
            }
            drop(tx);
            let r = answer("text/plain", false, rx).await;
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "the status went before the failure"
            );
            assert!(
                body_of(r).await.is_err(),
                "a cut body must not read as whole"
            );
        }

        let (tx, rx) = unbounded_channel();
        tx.send(Piece::More(Bytes::from_static(b"abc"))).unwrap();
        tx.send(Piece::Last(Bytes::new())).unwrap();
        let r = answer("text/plain", false, rx).await;
        assert_eq!(body_of(r).await.unwrap(), b"abc");
    }

    #[test]
    fn pieces_are_full_but_the_last_and_stop_when_the_scraper_is_gone() {
        let (tx, mut rx) = unbounded_channel();
        let mut pieces = Pieces::new(tx);
        let data: Vec<u8> = (0..PIECE_BYTES * 2 + 10).map(|i| i as u8).collect();
        pieces.write_all(&data[..7]).unwrap();
        pieces.write_all(&data[7..]).unwrap();
        pieces.finish();
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Ok(p) = rx.try_recv() {
            let (Piece::More(b) | Piece::Last(b)) = p else {
                panic!("{p:?}");
            };
            sizes.push(b.len());
            got.extend_from_slice(&b);
        }
        assert_eq!(sizes, [PIECE_BYTES, PIECE_BYTES, 10]);
        assert_eq!(got, data);

        let (tx, rx) = unbounded_channel();
        drop(rx);
        let mut pieces = Pieces::new(tx);
        let e = pieces.write_all(&data).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
