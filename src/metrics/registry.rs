//! Registering every family in a prometheus-client [`Registry`], once per exposition.
//!
//! prometheus-client cannot tell a metric which format it is being encoded in, so when the
//! protobuf body must carry native buckets only (see [`super::Layout::Split`]) the daemon keeps
//! two registries: one for text and one for protobuf, where the scheduler lag is registered
//! inside a [`HistogramView`] that asks its split histogram for its native buckets, and the
//! per-target and path collectors ([`TargetSeries`], `PathView`) carry the same flag. Every
//! metric and collector is registered in both as a clone of the same `Arc`, so a series exists
//! once in memory and both bodies list the families in the same order.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::{HistogramView, SeriesHistogram};
use super::labels::NameLabel;
use super::scrape::ScrapeSources;
use super::{BuildInfo, FloatGauge, TargetMap, TargetSeries};

/// Everything a registry exposes.
pub(crate) struct Shared<'a> {
    pub resolve_errors: &'a Family<NameLabel, Counter>,
    pub reload_successful: &'a Gauge,
    pub reload_success_timestamp: &'a FloatGauge,
    pub scrape_sources: &'a Arc<ScrapeSources>,
    pub timestamps: &'a Arc<super::timestamps::TimestampCollector>,
    pub outages: &'a Arc<super::outage::OutageCollector>,
    pub captures: &'a Arc<super::capture::CaptureCollector>,
    pub paths: &'a Arc<super::path::PathCollector>,
    pub targets: &'a Arc<parking_lot::Mutex<TargetMap>>,
    pub scheduler_lag: &'a SeriesHistogram,
    pub build: &'a BuildInfo,
}

/// One registration per row, in the order given: `name => metric, help;`, or
/// `name in Unit => metric, help;` for a family with a unit. The metric is cloned (an `Arc`).
macro_rules! families {
    ($r:ident; $($name:literal $(in $unit:ident)? => $metric:expr, $help:literal;)*) => {
        $( families!(@one $r, $name, [$($unit)?], $metric, $help); )*
    };
    (@one $r:ident, $name:literal, [], $metric:expr, $help:literal) => {
        $r.register($name, $help, $metric.clone())
    };
    (@one $r:ident, $name:literal, [$unit:ident], $metric:expr, $help:literal) => {
        $r.register_with_unit($name, $help, Unit::$unit, $metric.clone())
    };
}

/// A registry with every family; with `native` (the protobuf registry of the split layout) its
/// histograms encode their native buckets.
pub(crate) fn build(s: &Shared<'_>, native: bool) -> Registry {
    let mut registry = Registry::with_prefix("pingscope");
    let lag = HistogramView {
        metric: s.scheduler_lag.clone(),
        native,
    };
    let r = &mut registry;
    // Every per-target family (counters, histograms, gauges, target info, window gauges), from
    // the live targets; a registry writes its collectors after the metrics registered below.
    r.register_collector(Box::new(TargetSeries {
        targets: s.targets.clone(),
        native,
    }));
    // Help texts get their full stop from prometheus-client.
    families! { r;
        "resolve_errors" => s.resolve_errors, "Failed DNS lookups of a target";
        "scheduler_lag" in Seconds => lag,
            "How late probes were sent against their schedule";
        "config_last_reload_successful" => s.reload_successful,
            "Whether the last configuration reload attempt was successful";
        "config_last_reload_success_timestamp" in Seconds => s.reload_success_timestamp,
            "Timestamp of the last successful configuration reload";
    }
    let b = s.build;
    r.register(
        "build",
        "A metric with a constant 1 value labeled by version, revision and rustversion",
        Info::new([
            ("version", b.version.clone()),
            ("revision", b.revision.clone()),
            ("rustversion", b.rustversion.clone()),
        ]),
    );
    r.register_collector(Box::new(s.scrape_sources.clone()));
    r.register_collector(Box::new(s.timestamps.clone()));
    r.register_collector(Box::new(s.outages.clone()));
    r.register_collector(Box::new(s.captures.clone()));
    r.register_collector(Box::new(super::path::PathView {
        paths: s.paths.clone(),
        native,
    }));
    registry
}
