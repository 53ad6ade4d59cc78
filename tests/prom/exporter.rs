//! A stand-in for pingscope's `/metrics`: the metric names and labels of DESIGN.md, moved by
//! a scripted workload, served on 127.0.0.1 in the OpenMetrics text format or, when the
//! scraper asks for it, in Prometheus protobuf with native histograms. It lets the
//! dashboard and rules be proven against a real Prometheus in both histogram modes
//! without the daemon. Nothing here pings: the "probes" are counters moved by a timer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
use prometheus_client::registry::{Metric, Registry};

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// One scripted target: every `loss_every`-th probe is lost (0: none), replies cycle
/// through `rtts` seconds.
#[derive(Debug, Clone)]
pub struct Profile {
    pub target: &'static str,
    pub ip: &'static str,
    pub loss_every: u64,
    pub rtts: &'static [f64],
    pub ttl: i64,
    /// The `source` label of a mesh peer's monitor (mesh mode), on every series of the target.
    pub source: Option<&'static str>,
}

/// Time between two scripted probes of every target.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

const RTT_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

fn histograms() -> HistogramFamily {
    Family::new_with_constructor(rtt_histogram)
}

fn rtt_histogram() -> Histogram {
    Histogram::new_classic_and_native(RTT_BUCKETS, NativeHistogramConfig::new(1.1))
}

/// Registers `metric` in `r` under `name` and returns it.
fn add<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

#[derive(Debug)]
struct Metrics {
    sent: Family<Labels, Counter>,
    lost: Family<Labels, Counter>,
    late: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    icmp_errors: Family<Labels, Counter>,
    send_errors: Family<Labels, Counter>,
    resolve_errors: Family<Labels, Counter>,
    rtt: HistogramFamily,
    jitter: HistogramFamily,
    lag: HistogramFamily,
    jitter_rfc3550: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    ttl: Family<Labels, Gauge>,
    window_rtt: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    window_loss: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    target_info: Family<Labels, Gauge>,
    tcp_refused: Family<Labels, Counter>,
    in_flight: Gauge,
    reload_ok: Gauge,
    reload_ts: Gauge,
    sessions: Gauge,
    live_clients: Gauge,
    build_info: Family<Labels, Gauge>,
    // A path monitor's series for every target: two hops, the second the target itself.
    path_sent: Family<Labels, Counter>,
    path_lost: Family<Labels, Counter>,
    path_rtt: HistogramFamily,
    path_hop_info: Family<Labels, Gauge>,
    path_length: Family<Labels, Gauge>,
    path_changes: Family<Labels, Counter>,
    path_info: Family<Labels, Gauge>,
}

impl Metrics {
    /// Every family, registered in `r` as it is made.
    fn new(r: &mut Registry) -> Metrics {
        Metrics {
            sent: add(r, "sent", "echo requests sent", Family::default()),
            lost: add(r, "lost", "probes without reply", Family::default()),
            late: add(r, "late_replies", "late replies", Family::default()),
            duplicates: add(r, "duplicates", "duplicate replies", Family::default()),
            icmp_errors: add(r, "icmp_errors", "ICMP errors", Family::default()),
            send_errors: add(r, "send_errors", "failed sends", Family::default()),
            resolve_errors: add(r, "resolve_errors", "failed lookups", Family::default()),
            rtt: add(r, "rtt_seconds", "RTT", histograms()),
            jitter: add(r, "jitter_seconds", "IPDV", histograms()),
            lag: add(r, "scheduler_lag_seconds", "lag", histograms()),
            jitter_rfc3550: add(r, "jitter_rfc3550_seconds", "jitter", Family::default()),
            ttl: add(r, "reply_ttl", "TTL", Family::default()),
            window_rtt: add(r, "window_rtt_seconds", "window RTT", Family::default()),
            window_loss: add(r, "window_loss_ratio", "window loss", Family::default()),
            target_info: add(r, "target_info", "address", Family::default()),
            tcp_refused: add(r, "tcp_refused", "TCP refusals", Family::default()),
            in_flight: add(r, "probes_in_flight", "in flight", Gauge::default()),
            reload_ok: add(
                r,
                "config_last_reload_successful",
                "reload ok",
                Gauge::default(),
            ),
            reload_ts: add(
                r,
                "config_last_reload_success_timestamp_seconds",
                "reload time",
                Gauge::default(),
            ),
            sessions: add(r, "sessions_active", "sessions", Gauge::default()),
            live_clients: add(r, "live_clients", "live clients", Gauge::default()),
            build_info: add(r, "build_info", "build", Family::default()),
            path_sent: add(r, "path_hop_sent", "hop probes", Family::default()),
            path_lost: add(r, "path_hop_lost", "hop losses", Family::default()),
            path_rtt: add(r, "path_hop_rtt_seconds", "hop RTT", histograms()),
            path_hop_info: add(r, "path_hop_info", "hop", Family::default()),
            path_length: add(r, "path_length", "length", Family::default()),
            path_changes: add(r, "path_changes", "changes", Family::default()),
            path_info: add(r, "path_info", "path", Family::default()),
        }
    }

    fn setup(&self, profiles: &[Profile]) {
        self.reload_ok.set(1);
        self.reload_ts.set(1_700_000_000);
        self.sessions.set(2);
        self.live_clients.set(1);
        self.in_flight.set(3);
        self.build_info
            .get_or_create(&labels(&[("version", "0.1.0")]))
            .set(1);
        for (i, p) in profiles.iter().enumerate() {
            let l = target_labels(p);
            // Label sets created at zero, as the daemon does.
            for family in [&self.sent, &self.lost, &self.late, &self.duplicates] {
                family.get_or_create(&l).inc_by(0);
            }
            let mut icmp = l.clone();
            icmp.push(("type".into(), "unreachable".into()));
            self.icmp_errors.get_or_create(&icmp).inc_by(0);
            let mut send = l.clone();
            send.push(("reason".into(), "no_route".into()));
            self.send_errors.get_or_create(&send).inc_by(0);
            self.resolve_errors
                .get_or_create(&labels(&[("target", p.target)]))
                .inc_by(0);
            self.ttl.get_or_create(&l).set(p.ttl);
            self.path_length.get_or_create(&l).set(2);
            self.path_changes.get_or_create(&l).inc_by(0);
            let mut id = l.clone();
            id.push(("path_id".into(), "00000000000000aa".into()));
            self.path_info.get_or_create(&id).set(1);
            for (ttl, hop) in [("1", "192.0.2.254"), ("2", p.ip)] {
                let mut h = hop_labels(p, ttl);
                self.path_sent.get_or_create(&h).inc_by(0);
                self.path_lost.get_or_create(&h).inc_by(0);
                h.push(("hop_ip".into(), hop.into()));
                self.path_hop_info.get_or_create(&h).set(1);
            }
            let family = if p.ip.contains(':') { "ip6" } else { "ip4" };
            // The first profile is a TCP monitor, as a daemon shows one.
            let mut info = labels(&[
                ("target", p.target),
                ("host", p.target),
                ("ip", p.ip),
                ("family", family),
            ]);
            if i == 0 {
                info.push(("kind".into(), "tcp".into()));
                info.push(("port".into(), "443".into()));
                self.tcp_refused.get_or_create(&l).inc_by(0);
            } else {
                info.push(("kind".into(), "icmp".into()));
            }
            self.target_info.get_or_create(&info).set(1);
        }
    }

    /// The `n`-th probe of `p`.
    fn probe(&self, p: &Profile, n: u64) {
        let l = target_labels(p);
        self.sent.get_or_create(&l).inc();
        self.lag.get_or_create(&Vec::new()).observe(0.0005);
        if p.loss_every > 0 && n.is_multiple_of(p.loss_every) {
            self.lost.get_or_create(&l).inc();
            // Lost beyond hop 1: hop 1 answers, the target's TTL does not.
            self.path_sent.get_or_create(&hop_labels(p, "1")).inc();
            self.path_rtt
                .get_or_create(&hop_labels(p, "1"))
                .observe(0.001);
            self.path_sent.get_or_create(&hop_labels(p, "2")).inc();
            self.path_lost.get_or_create(&hop_labels(p, "2")).inc();
            return;
        }
        let len = p.rtts.len().max(1) as u64;
        let rtt = p.rtts.get((n % len) as usize).copied().unwrap_or(0.01);
        let prev = p
            .rtts
            .get(((n + len - 1) % len) as usize)
            .copied()
            .unwrap_or(rtt);
        self.rtt.get_or_create(&l).observe(rtt);
        for (ttl, share) in [("1", 0.5), ("2", 1.0)] {
            let h = hop_labels(p, ttl);
            self.path_sent.get_or_create(&h).inc();
            self.path_rtt.get_or_create(&h).observe(rtt * share);
        }
        self.jitter.get_or_create(&l).observe((rtt - prev).abs());
        self.jitter_rfc3550
            .get_or_create(&l)
            .set((rtt - prev).abs());
        let (min, max) = p
            .rtts
            .iter()
            .fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        for (stat, value) in [("min", min), ("max", max)] {
            let mut s = l.clone();
            s.push(("stat".into(), stat.into()));
            self.window_rtt.get_or_create(&s).set(value);
        }
        let loss = if p.loss_every > 0 {
            1.0 / p.loss_every as f64
        } else {
            0.0
        };
        self.window_loss.get_or_create(&l).set(loss);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn target_labels(p: &Profile) -> Labels {
    let mut l = labels(&[("target", p.target), ("ip", p.ip)]);
    l.extend(p.source.map(|s| ("source".to_owned(), s.to_owned())));
    l
}

fn hop_labels(p: &Profile, ttl: &str) -> Labels {
    labels(&[("target", p.target), ("ip", p.ip), ("ttl", ttl)])
}

/// The running fake exporter; stops its threads on drop.
#[derive(Debug)]
pub struct FakeExporter {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeExporter {
    /// Serve on a free 127.0.0.1 port and probe every profile each [`PROBE_INTERVAL`].
    pub fn start(profiles: Vec<Profile>) -> FakeExporter {
        let mut registry = Registry::with_prefix("pingscope");
        let metrics = Arc::new(Metrics::new(&mut registry));
        metrics.setup(&profiles);
        let registry = Arc::new(registry);

        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind 127.0.0.1:0 for the fake exporter: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("fake exporter address: {e}"),
        };
        if let Err(e) = listener.set_nonblocking(true) {
            panic!("fake exporter listener: {e}");
        }
        let stop = Arc::new(AtomicBool::new(false));

        let workload = {
            let (stop, metrics) = (stop.clone(), metrics.clone());
            std::thread::spawn(move || {
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    for p in &profiles {
                        metrics.probe(p, n);
                    }
                    std::thread::sleep(PROBE_INTERVAL);
                }
            })
        };
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &registry),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        FakeExporter {
            port,
            stop,
            threads: vec![workload, server],
        }
    }

    /// `127.0.0.1:PORT`, for a scrape config.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Answer one scrape: protobuf when the scraper accepts it (native histograms), else text.
fn serve(mut stream: TcpStream, registry: &Registry) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0_u8; 4096];
    // Read the request head (bounded): scrapes are GETs without a body.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let wants_protobuf = head
        .lines()
        .any(|l| l.starts_with("accept:") && l.contains("application/vnd.google.protobuf"));
    let (content_type, body) = if wants_protobuf {
        match prometheus_client::encoding::prometheus_protobuf::encode_to_vec(registry) {
            Ok(body) => (
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
                body,
            ),
            Err(_) => return,
        }
    } else {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
            return;
        }
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text.into_bytes(),
        )
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes());
    let _ = stream.write_all(&body);
}
