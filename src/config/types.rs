//! The validated, immutable config: every default applied, every value in its own type.

pub use super::outage::{AlertThresholds, CaptureRule, OutageRule};
use crate::probe::ProbeKind;
use crate::probe::path::PathOptions;
use crate::probe::request::PortOptions;
use crate::resolve::Family;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Built-in defaults, named so the sample config, the docs and the validator agree.
pub mod defaults {
    use std::time::Duration;

    pub const INTERVAL: Duration = Duration::from_secs(1);
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    /// ICMP payload bytes, as `ping` sends.
    pub const SIZE: u16 = 56;
    pub const WINDOW: usize = 60;
    /// Classic RTT buckets in seconds: 1-2.5-5 steps from 0.5 ms to 250 ms, where paths to
    /// other hosts lie and RTT thresholds are set, with one bound below (100 µs: the same host
    /// or segment) and one above (1 s). Eleven bounds keep a text scrape at 32 series per
    /// address (README, "Series per target"); protobuf scrapes carry native buckets instead.
    pub const BUCKETS: [f64; 11] = [
        0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
    /// Classic jitter (IPDV) buckets in seconds, one a decade: below 1 ms, up to 10 ms, up to
    /// 100 ms, more. Jitter's mean comes from the histogram's sum and count, exactly.
    pub const JITTER_BUCKETS: [f64; 3] = [0.001, 0.01, 0.1];
    /// `metrics.window_gauges`: the `pingscope_window_*` gauges are off unless asked for.
    pub const WINDOW_GAUGES: bool = false;
    pub const DNS_REFRESH: Duration = Duration::from_secs(5 * 60);
    pub const DATABASE: &str = "data/pingscope.db";
    pub const MAX_ACTIVE: usize = 16;
    pub const MAX_DURATION: Duration = Duration::from_secs(3600);
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
    pub const MAX_SESSIONS: usize = 1000;
    /// `sessions.max_captures_per_minute`.
    pub const CAPTURES_PER_MINUTE: u32 = 4;
    pub const MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
    pub const PROFILE_COUNT: u32 = 5;
    pub const PROFILE_INTERVAL: Duration = Duration::from_millis(200);
    pub const PROFILE_TIMEOUT: Duration = Duration::from_secs(1);
    /// The probe profile that always exists.
    pub const PROFILE: &str = "default";
}

/// Limits the validator enforces. Those of a probe are the ones every front shares
/// ([`crate::probe::rules`]); they are named here too so the config reads as one place.
pub mod limits {
    use std::time::Duration;

    pub use crate::probe::rules::{MAX_SIZE_V4, MAX_SIZE_V6, MAX_TIMEOUT};
    /// Shortest probe interval (also the shortest session interval): below it a target floods.
    pub const MIN_INTERVAL: Duration = crate::probe::rules::MIN_MONITOR_INTERVAL;
    pub const MAX_WINDOW: usize = 100_000;
    /// Shortest DNS refresh: re-resolving faster only loads the resolver.
    pub const MIN_DNS_REFRESH: Duration = Duration::from_secs(1);
    /// Most `sessions.max_captures_per_minute`: one capture a second over all targets.
    pub const MAX_CAPTURES_PER_MINUTE: u32 = 60;
}

/// The whole config of `pingscope serve`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The target defaults after validation (every target already has them applied).
    pub defaults: TargetOptions,
    /// Monitors: those of `targets`, then those read from `target_files`, in file order. Shared
    /// with the scheduler's running monitors, so 10,000 targets are held once.
    pub targets: Vec<Arc<TargetConfig>>,
    /// How many of `targets` (the last ones) came from `target_files`.
    pub targets_from_files: usize,
    /// Globs of file_sd files, as written (relative to the config file's folder).
    pub target_files: Vec<String>,
    pub dns: DnsConfig,
    pub sessions: SessionsConfig,
    pub access: AccessConfig,
    /// Named `/probe` settings; always contains `default`.
    pub probe_profiles: BTreeMap<String, ProbeProfile>,
    pub probe_limits: ProbeLimitsConfig,
    pub histogram: HistogramConfig,
    /// `mesh:`: monitor the other instances of a fleet.
    pub mesh: Option<super::mesh::MeshConfig>,
    /// `path_pacing:`: the per-router budget of every path monitor together.
    pub path_pacing: PathPacingConfig,
    /// The file this config was read from; `None` for the embedded default or a string.
    pub source_path: Option<PathBuf>,
}

/// The per-target options: those of the `defaults` section, and each target's (the defaults
/// with its own overrides applied). Serializes with durations as config strings (`"500ms"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TargetOptions {
    /// What kind of probe.
    pub kind: ProbeKind,
    #[serde(with = "crate::duration::serde_duration")]
    pub interval: Duration,
    #[serde(with = "crate::duration::serde_duration")]
    pub timeout: Duration,
    /// ICMP payload bytes.
    pub size: u16,
    pub family: Family,
    /// IPv4 TTL / IPv6 hop limit; `None` leaves the kernel default.
    pub ttl: Option<u8>,
    /// TOS byte / traffic class; `None` leaves the kernel default.
    pub tos: Option<u8>,
    pub source: Option<IpAddr>,
    pub interface: Option<String>,
    /// Probes behind the window statistics (`/api/v1/targets`, the live page, `capture.on_loss`
    /// and, when on, the `pingscope_window_*` gauges).
    pub window: usize,
    /// Which optional series the target's addresses expose (`metrics:`).
    pub metrics: MetricsConfig,
    /// When an address of the target is in an outage (`outage:`).
    pub outage: OutageRule,
    /// The target's own alert thresholds (`alert:`).
    pub alert: AlertThresholds,
    /// When the path to an address is captured (`capture:`).
    pub capture: CaptureRule,
    /// Options of `kind: path` (`path:`).
    pub path: PathOptions,
    /// Port and UDP mode of `tcp` and `udp` targets.
    pub port: PortOptions,
}

impl Default for TargetOptions {
    fn default() -> Self {
        Self {
            kind: ProbeKind::Icmp,
            interval: defaults::INTERVAL,
            timeout: defaults::TIMEOUT,
            size: defaults::SIZE,
            family: Family::Auto,
            ttl: None,
            tos: None,
            source: None,
            interface: None,
            window: defaults::WINDOW,
            metrics: MetricsConfig::default(),
            outage: OutageRule::default(),
            alert: AlertThresholds::default(),
            capture: CaptureRule::default(),
            path: PathOptions::default(),
            port: PortOptions::default(),
        }
    }
}

/// One monitor, with every default applied. Compared whole on reload: any difference restarts it.
/// Serializes flat (its options beside its name), for the API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TargetConfig {
    /// The `target` label; unique; defaults to `host` (then one string for both). Shared, not
    /// copied, by the series, status and capture entries of the target: at 100,000 targets each
    /// copy of the names took megabytes.
    pub name: Arc<str>,
    /// Host name or IP address to resolve and ping.
    pub host: Arc<str>,
    /// Extra Prometheus labels.
    pub labels: BTreeMap<String, String>,
    /// Shared by the targets of one config whose options are equal (most take every option from
    /// `defaults`): a copy per target was two hundred bytes, two megabytes at 10,000 targets.
    #[serde(flatten)]
    pub options: Arc<TargetOptions>,
}

/// The `dns` section.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsConfig {
    /// Empty: the system resolver.
    pub servers: Vec<SocketAddr>,
    /// Re-resolve at least this often.
    pub refresh: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            refresh: defaults::DNS_REFRESH,
        }
    }
}

/// The `path_pacing` section: the answers (time exceeded, unreachable) all path monitors
/// together ask of one router, as a token bucket per router address: routers rate-limit the
/// ICMP errors they send (Linux: a burst of 6, then one a second per source), and a probe the
/// bucket holds back this round is neither sent nor lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathPacingConfig {
    /// Answers a second asked of one router.
    pub router_rate: u32,
    /// The bucket's size: answers asked of one router at once.
    pub router_burst: u32,
}

impl Default for PathPacingConfig {
    fn default() -> Self {
        Self {
            router_rate: crate::probe::path::pacer::DEFAULT_HOP_RATE as u32,
            router_burst: crate::probe::path::pacer::DEFAULT_HOP_BURST,
        }
    }
}

/// Largest `path_pacing.router_rate` and `router_burst`.
pub const MAX_ROUTER_RATE: i64 = 10_000;

/// The `probe_limits` section: the caps of every `/probe` request, so none holds a probe slot
/// longer than `max_duration` whatever its scrape-timeout header, `interval` or `count` say.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeLimitsConfig {
    /// Longest one probe runs, DNS included; a longer scrape-timeout header is cut to it.
    pub max_duration: Duration,
    /// Longest `interval` a caller may ask for.
    pub max_interval: Duration,
    /// Most packets a caller may ask for.
    pub max_count: u64,
}

impl Default for ProbeLimitsConfig {
    fn default() -> Self {
        Self {
            max_duration: crate::probe::rules::MAX_PROBE_DURATION,
            max_interval: crate::probe::rules::MAX_PROBE_INTERVAL,
            max_count: crate::probe::rules::MAX_PROBE_COUNT,
        }
    }
}

/// The `sessions` section: limits of on-demand sessions and their store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionsConfig {
    /// SQLite file; relative paths were resolved against the config file's folder.
    pub database: PathBuf,
    pub max_active: usize,
    pub max_duration: Duration,
    pub min_interval: Duration,
    /// Captures (path sessions started by the monitors) in any 60 s, over all targets; 0: none.
    pub max_captures_per_minute: u32,
    pub retention: RetentionConfig,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from(defaults::DATABASE),
            max_active: defaults::MAX_ACTIVE,
            max_duration: defaults::MAX_DURATION,
            min_interval: defaults::MIN_INTERVAL,
            max_captures_per_minute: defaults::CAPTURES_PER_MINUTE,
            retention: RetentionConfig::default(),
        }
    }
}

/// How many stored sessions to keep, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetentionConfig {
    pub max_sessions: usize,
    pub max_age: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_sessions: defaults::MAX_SESSIONS,
            max_age: defaults::MAX_AGE,
        }
    }
}

/// The `access` section: which addresses may be pinged on demand (`/probe`, sessions).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccessConfig {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            allow: vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ],
            deny: Vec::new(),
        }
    }
}

/// Why [`AccessConfig::check`] refused an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// A deny rule matched (deny wins over allow).
    #[error("denied by access.deny {0}")]
    Deny(IpNet),
    /// No allow rule matched.
    #[error("not in access.allow")]
    NotAllowed,
    /// `0.0.0.0` or `::`: the kernel delivers them to this host itself, so no rule may allow them.
    #[error("is the unspecified address, which reaches this host")]
    Unspecified,
}

impl AccessConfig {
    /// May `ip` be pinged on demand? Deny rules win; an IPv4-mapped IPv6 address is checked as the
    /// IPv4 address it carries, so `::ffff:127.0.0.1` cannot slip past a rule for `127.0.0.0/8`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = ip.to_canonical();
        if ip.is_unspecified() {
            return Err(Denied::Unspecified);
        }
        if let Some(rule) = self.deny.iter().find(|net| net.contains(&ip)) {
            return Err(Denied::Deny(*rule));
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(Denied::NotAllowed)
        }
    }
}

/// A named set of `/probe` settings (`module=` in the query), like a blackbox module.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ProbeProfile {
    pub kind: ProbeKind,
    pub count: u32,
    #[serde(with = "crate::duration::serde_duration")]
    pub interval: Duration,
    #[serde(with = "crate::duration::serde_duration")]
    pub timeout: Duration,
    pub size: u16,
    pub family: Family,
    /// Port and UDP mode of `tcp` and `udp` profiles.
    pub port: PortOptions,
}

/// The `metrics:` block of the defaults or a target: series a target exposes only when asked.
/// An exposition choice only: the figures behind them are kept either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MetricsConfig {
    /// `pingscope_window_loss_ratio` and `pingscope_window_rtt_seconds{stat}`: five series per
    /// address, the window's figures without PromQL.
    pub window_gauges: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            window_gauges: defaults::WINDOW_GAUGES,
        }
    }
}

/// Histogram layouts, shared by every target.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramConfig {
    /// Classic bucket upper bounds of the RTT histogram in seconds, strictly increasing.
    pub buckets: Vec<f64>,
    /// Classic bucket upper bounds of the jitter (IPDV) histogram in seconds, strictly increasing.
    pub jitter_buckets: Vec<f64>,
    /// Also expose native histograms to protobuf scrapers.
    pub native: bool,
    /// With `native`, send the classic buckets to protobuf scrapers too (for a Prometheus
    /// keeping both with `scrape_classic_histograms: true`); else protobuf carries native
    /// buckets only. Text scrapes always get the classic buckets.
    pub classic_in_protobuf: bool,
}

impl Default for HistogramConfig {
    fn default() -> Self {
        Self {
            buckets: defaults::BUCKETS.to_vec(),
            jitter_buckets: defaults::JITTER_BUCKETS.to_vec(),
            native: true,
            classic_in_protobuf: false,
        }
    }
}

impl fmt::Display for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name == self.host {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} ({})", self.name, self.host)
        }
    }
}
