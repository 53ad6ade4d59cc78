//! Registering every family in prometheus-client [`Registry`]s, once per exposition.
//!
//! prometheus-client cannot tell a metric which format it is being encoded in, so when the
//! protobuf body must carry native buckets only (see [`super::Layout::Split`]) the protobuf
//! registries register the scheduler lag inside a [`HistogramView`] that asks its split
//! histogram for its native buckets, and the per-target and path collectors ([`TargetSeries`],
//! `PathView`) carry the same flag. Text scrapes encode one registry ([`build`]); protobuf
//! scrapes encode [`Protobuf`]'s parts one after the other, because prometheus-client builds a
//! registry's whole protobuf model before it writes a byte. Every metric and collector is
//! registered in each as a clone of the same `Arc`, so a series exists once in memory and both
//! bodies list the families in the same order.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::{HistogramView, SharedHistogram};
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
    pub scheduler_lag: &'a SharedHistogram,
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

/// A registry with every family, the one text scrapes encode; with `native` its histograms
/// encode their native buckets (the split layout's protobuf body, which [`protobuf`]'s parts
/// write in pieces; tests compare the two).
pub(crate) fn build(s: &Shared<'_>, native: bool) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    // Every per-target family (counters, histograms, gauges, target info, window gauges), from
    // the live targets; a registry writes its collectors after its metrics, so in the order
    // [`Protobuf`] writes its parts.
    registry.register_collector(Box::new(TargetSeries {
        targets: s.targets.clone(),
        native,
    }));
    // Every address's outage series, and the targets' thresholds.
    registry.register_collector(Box::new(s.outages.clone()));
    register_metrics(&mut registry, s, native);
    register_collectors(&mut registry, s, native);
    registry
}

/// What protobuf scrapes write, in parts written one after the other: `head` (the registered
/// metrics), the per-target families and the outage families one by one, in chunks of targets
/// ([`super::target::TargetFamilies`], [`super::outage::OutageParts`]), then `tail` (the other
/// collectors). The same families in the same order as [`build`]'s registry, but
/// prometheus-client's protobuf model (it builds a registry's whole model before it writes a
/// byte, about ten kilobytes a target) is in memory one part at a time.
#[derive(Debug)]
pub(crate) struct Protobuf {
    pub head: Registry,
    pub tail: Registry,
    /// Whether histograms encode their native buckets ([`super::Layout::Split`]).
    pub native: bool,
}

/// The protobuf parts, with `native` as in [`build`].
pub(crate) fn protobuf(s: &Shared<'_>, native: bool) -> Protobuf {
    let mut head = Registry::with_prefix(PREFIX);
    register_metrics(&mut head, s, native);
    let mut tail = Registry::with_prefix(PREFIX);
    register_collectors(&mut tail, s, native);
    Protobuf { head, tail, native }
}

/// The prefix of every family's name.
pub(crate) const PREFIX: &str = "pingscope";

/// The metrics registered one by one.
fn register_metrics(r: &mut Registry, s: &Shared<'_>, native: bool) {
    let lag = HistogramView {
        metric: s.scheduler_lag.clone(),
        native,
    };
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
}

/// The collectors other than the per-target and outage ones.
fn register_collectors(r: &mut Registry, s: &Shared<'_>, native: bool) {
    r.register_collector(Box::new(s.scrape_sources.clone()));
    r.register_collector(Box::new(s.timestamps.clone()));
    r.register_collector(Box::new(s.captures.clone()));
    r.register_collector(Box::new(super::path::PathView {
        paths: s.paths.clone(),
        native,
    }));
}
