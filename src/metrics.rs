//! (stub mirroring the metrics branch until it lands)
#![allow(missing_docs, dead_code)]
use std::net::IpAddr;
use std::time::SystemTime;

use crate::engine::ProbeEvent;

#[derive(Debug, thiserror::Error)]
#[error("metrics")]
pub struct MetricsError;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetLabels { target: String, ip: IpAddr, extra: Vec<(String, String)> }
impl TargetLabels {
    pub fn new(target: impl Into<String>, ip: IpAddr, extra: impl IntoIterator<Item = (String, String)>) -> Result<Self, MetricsError> {
        Ok(Self { target: target.into(), ip, extra: extra.into_iter().collect() })
    }
    pub fn target(&self) -> &str { &self.target }
    pub fn ip(&self) -> IpAddr { self.ip }
}
#[derive(Clone, Copy, Debug)]
pub struct WindowRtt { pub min: f64, pub mean: f64, pub max: f64, pub stddev: f64 }
#[derive(Clone, Debug)]
pub struct TargetMetrics;
impl TargetMetrics {
    pub fn on_sent(&self) {}
    pub fn on_event(&self, _e: &ProbeEvent) {}
    pub fn on_send_error(&self, _r: &'static str) {}
    pub fn set_window(&self, _l: f64, _r: Option<WindowRtt>) {}
}
#[derive(Clone, Debug, Default)]
pub struct Metrics;
impl Metrics {
    pub fn new(_o: MetricsOptions) -> Result<Self, MetricsError> { Ok(Self) }
    pub fn target(&self, _l: &TargetLabels, _host: &str, _family: crate::resolve::Family) -> TargetMetrics { TargetMetrics }
    pub fn encode(&self, _f: Format) -> Result<Vec<u8>, MetricsError> { Ok(Vec::new()) }
    pub fn set_gauge_source(&self, _g: ScrapeGauge, _s: impl Fn() -> i64 + Send + Sync + 'static) {}
    pub fn track_resolve(&self, _t: &str) {}
    pub fn forget_resolve(&self, _t: &str) {}
    pub fn forget(&self, _l: &TargetLabels) {}
    pub fn observe_scheduler_lag(&self, _s: f64) {}
    pub fn inc_resolve_error(&self, _t: &str) {}
    pub fn set_reload_status(&self, _ok: bool, _at: SystemTime) {}
}

#[derive(Clone, Debug, Default)]
pub struct MetricsOptions { pub buckets: Vec<f64>, pub native: bool, pub build: BuildInfo }
#[derive(Clone, Debug, Default)]
pub struct BuildInfo;
#[derive(Clone, Copy, Debug)]
pub enum ScrapeGauge { ProbesInFlight, SessionsActive, LiveClients }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format { Text, Protobuf }
impl Format { pub fn content_type(self) -> &'static str { "text/plain; version=0.0.4" } }
pub fn negotiate(_a: &str) -> Format { Format::Text }
