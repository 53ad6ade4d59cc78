//! The telemetry path: text by default, protobuf (native histograms) when the scraper asks,
//! gzip-compressed when it accepts that (as Prometheus always does).
//!
//! Encoding is the one CPU-heavy thing a scrape does (about 0.2 s of CPU at 10,000 targets, and
//! seconds at 50,000), so it runs on [`ENCODERS`] dedicated threads at a lower priority
//! ([`ENCODER_NICE`]): when the CPU is short, the runtime's workers that send probes go first and
//! the scrape takes longer, instead of the probes going out late. A few scrapes wait in line; past
//! [`QUEUE`] the answer is 503, which a scraper retries at its next interval.

use std::sync::{Arc, OnceLock, mpsc};

use parking_lot::Mutex;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

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
    reply: oneshot::Sender<Result<Vec<u8>, MetricsError>>,
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
        // The scraper may have gone (timeout); its answer is simply dropped.
        let body = job.run();
        let _ = job.reply.send(body);
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
    /// The body, compressed as it is encoded when the scraper accepts gzip.
    fn run(&self) -> Result<Vec<u8>, MetricsError> {
        if self.gzip {
            compress::gzip_with(|w| self.metrics.encode_into(self.format, w))
        } else {
            self.metrics.encode(self.format)
        }
    }
}

/// Why a scrape got no body.
enum Failed {
    Encode(MetricsError),
    Busy,
    Gone,
}

async fn encode(metrics: Metrics, format: Format, gzip: bool) -> Result<Vec<u8>, Failed> {
    let (reply, answer) = oneshot::channel();
    let job = Job {
        metrics,
        format,
        gzip,
        reply,
    };
    let Some(queue) = encoders() else {
        return match tokio::task::spawn_blocking(move || job.run()).await {
            Ok(r) => r.map_err(Failed::Encode),
            Err(_) => Err(Failed::Gone),
        };
    };
    match queue.try_send(job) {
        Ok(()) => {}
        Err(mpsc::TrySendError::Full(_)) => return Err(Failed::Busy),
        Err(mpsc::TrySendError::Disconnected(_)) => return Err(Failed::Gone),
    }
    match answer.await {
        Ok(r) => r.map_err(Failed::Encode),
        Err(_) => Err(Failed::Gone),
    }
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = crate::metrics::negotiate(accept);
    let gzip = compress::accepts_gzip(&headers);
    match encode(app.metrics().clone(), format, gzip).await {
        Ok(body) => compress::scrape_response(format.content_type(), body, gzip),
        Err(Failed::Encode(e)) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {e}\n"),
            )
                .into_response()
        }
        Err(Failed::Busy) => {
            tracing::warn!(queued = QUEUE, "too many scrapes waiting; answering 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "too many scrapes in progress; retry later\n",
            )
                .into_response()
        }
        Err(Failed::Gone) => {
            tracing::error!("metrics encoder stopped");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
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

    #[tokio::test]
    async fn encodes_on_low_priority_threads_the_same_body() {
        let metrics = Metrics::new(MetricsOptions::default()).expect("registry");
        let direct = metrics.encode(Format::Text).expect("direct encode");
        let Ok(queued) = encode(metrics.clone(), Format::Text, false).await else {
            panic!("queued encode failed");
        };
        assert_eq!(queued, direct);
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
}
