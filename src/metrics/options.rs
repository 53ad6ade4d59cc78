//! What the registry is built from ([`MetricsOptions`], [`BuildInfo`]) and what can go wrong
//! building or encoding it ([`MetricsError`]).

use prometheus_client::encoding::prometheus_protobuf;

use crate::config::HistogramConfig;

/// Errors of this module. Each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A custom label name of a target cannot be used.
    #[error("target {target:?}: label name {name:?} cannot be used: {why}")]
    LabelName {
        /// The target's name.
        target: String,
        /// The offending label name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// The histogram buckets are not finite, positive and strictly increasing.
    #[error("{histogram} histogram buckets {buckets:?}: {why}")]
    Buckets {
        /// Which histogram: `RTT` or `jitter`.
        histogram: &'static str,
        /// The buckets given.
        buckets: Vec<f64>,
        /// Why.
        why: &'static str,
    },
    /// Writing the text exposition failed.
    #[error("encoding /metrics as Prometheus text: {source}")]
    EncodeText {
        /// The encoder's error.
        #[source]
        source: std::fmt::Error,
    },
    /// Writing the protobuf exposition failed.
    #[error("encoding /metrics as protobuf: {source}")]
    EncodeProtobuf {
        /// The encoder's error.
        #[source]
        source: prometheus_protobuf::EncodeError,
    },
    /// Writing the encoded body out (into a compressor) failed.
    #[error("writing /metrics: {source}")]
    Write {
        /// What the writer said.
        #[from]
        source: std::io::Error,
    },
}

/// Labels of `pingscope_build_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version.
    pub version: String,
    /// VCS revision the binary was built from.
    pub revision: String,
    /// rustc version that built it.
    pub rustversion: String,
}

impl Default for BuildInfo {
    /// The crate version, plus `PINGSCOPE_REVISION` and `PINGSCOPE_RUSTC_VERSION` from the build
    /// environment when a build script sets them (`unknown` otherwise).
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: option_env!("PINGSCOPE_REVISION")
                .unwrap_or("unknown")
                .to_owned(),
            rustversion: option_env!("PINGSCOPE_RUSTC_VERSION")
                .unwrap_or("unknown")
                .to_owned(),
        }
    }
}

/// How the registry is built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsOptions {
    /// The histogram layouts (the config's `defaults.histogram`).
    pub histogram: HistogramConfig,
    /// Labels of `pingscope_build_info`.
    pub build: BuildInfo,
}
