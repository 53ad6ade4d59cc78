//! The protobuf exposition (length-delimited `io.prometheus.client.MetricFamily` messages),
//! written a part at a time.
//!
//! prometheus-client builds the whole protobuf model of a registry (a `Metric` with its label
//! pairs and histogram per series, a few hundred bytes each) before it writes a byte: for a
//! registry with every family that was about 10 kB a target in memory for the length of a
//! scrape, 100 MB at 10,000 targets. So the body is written in parts ([`registry::Protobuf`]):
//! the registered metrics, then each per-target and per-address outage family on its own,
//! [`CHUNK`] targets at a time, then the other collectors. A family's message is put together
//! from its chunks (the entries of a repeated field may come in any number of pieces), in the
//! order prost writes its fields, so the body is byte for byte what one registry would give.

use std::io::Write;
use std::ops::Range;

use prometheus_client::encoding::prometheus_protobuf::{self, prometheus_data_model as pb};
use prometheus_client::registry::Registry;
use prost::Message as _;

use super::{Metrics, MetricsError, TargetSeries, outage, registry, target};

/// Targets (or addresses, for the outage families) whose series are modelled at once: a few
/// hundred kilobytes of model.
const CHUNK: usize = 256;

impl Metrics {
    /// Encodes every series as length-delimited protobuf `MetricFamily` messages
    /// ([`super::PROTOBUF_CONTENT_TYPE`]). With native histograms on, histograms carry native
    /// buckets (and classic ones only with
    /// [`HistogramConfig::classic_in_protobuf`](crate::config::HistogramConfig::classic_in_protobuf)).
    pub fn encode_protobuf(&self) -> Result<Vec<u8>, MetricsError> {
        let mut body = Vec::new();
        self.encode_protobuf_into(&mut body)?;
        Ok(body)
    }

    /// Encodes like [`Self::encode_protobuf`] into `out`, a part at a time.
    pub(super) fn encode_protobuf_into(&self, out: &mut dyn Write) -> Result<(), MetricsError> {
        self.encode_protobuf_chunked(out, CHUNK)
    }

    /// [`Self::encode_protobuf_into`] with `chunk` targets modelled at a time.
    fn encode_protobuf_chunked(
        &self,
        out: &mut dyn Write,
        chunk: usize,
    ) -> Result<(), MetricsError> {
        let chunk = chunk.max(1);
        let parts = &self.shared.protobuf;
        let mut message = Vec::new();
        write_registry(&parts.head, &mut message, out)?;
        let targets = TargetSeries {
            targets: self.shared.targets.clone(),
            native: parts.native,
        }
        .snapshot();
        let mut body = Vec::new();
        let mut chunked = |rows: usize, families: u32, make: &dyn Fn(u32, Range<usize>) -> Part| {
            for family in 0..families {
                write_family(rows, chunk, |range| make(family, range), &mut body, out)?;
            }
            Ok::<(), MetricsError>(())
        };
        chunked(targets.len(), target::FAMILIES, &|family, range| {
            Box::new(target::TargetFamilies {
                targets: targets.clone(),
                range,
                native: parts.native,
                families: 1 << family,
            })
        })?;
        let outages = self.shared.outages.snapshot();
        let outage_part = |range, families| -> Part {
            Box::new(outage::OutageParts {
                collector: self.shared.outages.clone(),
                handles: outages.clone(),
                range,
                families,
            })
        };
        chunked(outages.len(), outage::ADDRESS_FAMILIES, &|family, range| {
            outage_part(range, 1 << family)
        })?;
        let mut thresholds = Registry::with_prefix(registry::PREFIX);
        thresholds.register_collector(outage_part(0..0, outage::THRESHOLDS));
        write_registry(&thresholds, &mut message, out)?;
        write_registry(&parts.tail, &mut message, out)
    }

    /// One registry with every family as the protobuf parts write them (with the default
    /// build labels), for tests to encode at once.
    #[cfg(test)]
    pub(super) fn whole_protobuf_registry(&self) -> Registry {
        let s = &self.shared;
        registry::build(
            &registry::Shared {
                resolve_errors: &s.resolve_errors,
                reload_successful: &s.reload_successful,
                reload_success_timestamp: &s.reload_success_timestamp,
                scrape_sources: &s.scrape_sources,
                timestamps: &s.timestamps,
                outages: &s.outages,
                captures: &s.captures,
                paths: &s.paths,
                targets: &s.targets,
                scheduler_lag: &s.scheduler_lag,
                build: &super::BuildInfo::default(),
            },
            s.protobuf.native,
        )
    }

    /// [`Self::encode_protobuf`] with `chunk` targets modelled at a time.
    #[cfg(test)]
    pub(super) fn encode_protobuf_in_chunks(&self, chunk: usize) -> Result<Vec<u8>, MetricsError> {
        let mut body = Vec::new();
        self.encode_protobuf_chunked(&mut body, chunk)?;
        Ok(body)
    }
}

/// A collector of one chunk of one family.
type Part = Box<dyn prometheus_client::collector::Collector>;

/// Writes one family of `rows` rows (targets, addresses) as one message, the collector
/// `part(range)` modelling each chunk of rows; a family none of whose chunks writes anything is
/// left out. With no rows, one empty chunk still writes what a collector writes for none.
fn write_family(
    rows: usize,
    chunk: usize,
    part: impl Fn(Range<usize>) -> Part,
    body: &mut Vec<u8>,
    out: &mut dyn Write,
) -> Result<(), MetricsError> {
    // prost's order: name, help and type (from the first chunk that writes the family), the
    // series of every chunk, the unit.
    body.clear();
    let mut unit = None;
    let mut start = 0;
    loop {
        let range = start..rows.min(start + chunk);
        let mut registry = Registry::with_prefix(registry::PREFIX);
        registry.register_collector(part(range));
        for mut written in model(&registry)? {
            let series = pb::MetricFamily {
                metric: std::mem::take(&mut written.metric),
                ..pb::MetricFamily::default()
            };
            if unit.is_none() {
                unit = Some(std::mem::take(&mut written.unit));
                written.encode(body).map_err(failed)?;
            }
            series.encode(body).map_err(failed)?;
        }
        start += chunk;
        if start >= rows {
            break;
        }
    }
    let Some(unit) = unit else { return Ok(()) };
    let unit = pb::MetricFamily {
        unit,
        ..pb::MetricFamily::default()
    };
    unit.encode(body).map_err(failed)?;
    let mut length = Vec::with_capacity(10);
    prost::encode_length_delimiter(body.len(), &mut length).map_err(failed)?;
    out.write_all(&length)?;
    out.write_all(body)?;
    Ok(())
}

/// prometheus-client's model of `registry`.
fn model(registry: &Registry) -> Result<Vec<pb::MetricFamily>, MetricsError> {
    prometheus_protobuf::encode(registry)
        .map_err(|e| MetricsError::EncodeProtobuf { source: e.into() })
}

fn failed(e: prost::EncodeError) -> MetricsError {
    MetricsError::EncodeProtobuf { source: e.into() }
}

/// Writes every family of `registry` to `out`, each through `message`.
fn write_registry(
    registry: &Registry,
    message: &mut Vec<u8>,
    out: &mut dyn Write,
) -> Result<(), MetricsError> {
    for family in model(registry)? {
        message.clear();
        family.encode_length_delimited(message).map_err(failed)?;
        out.write_all(message)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
