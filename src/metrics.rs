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
    pub fn target(&self, _l: &TargetLabels, _host: &str, _family: &str) -> TargetMetrics { TargetMetrics }
    pub fn forget(&self, _l: &TargetLabels) {}
    pub fn observe_scheduler_lag(&self, _s: f64) {}
    pub fn inc_resolve_error(&self, _t: &str) {}
    pub fn set_reload_status(&self, _ok: bool, _at: SystemTime) {}
    pub fn set_probes_in_flight(&self, _n: usize) {}
}
