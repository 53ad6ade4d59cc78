//! Exposition formats of `/metrics` and the `Accept` header negotiation between them.
//!
//! Text is the Prometheus text format 0.0.4: it is what `promtool check metrics` parses, and
//! every Prometheus version scrapes it. Protobuf (delimited `io.prometheus.client.MetricFamily`)
//! is sent only to a scraper that asks for it, since it is the one format that carries native
//! histograms (Prometheus with `--enable-feature=native-histograms` asks for it first).

/// `Content-Type` of the text body.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `Content-Type` of the protobuf body (as Prometheus and client_golang spell it).
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A body format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4 (classic histograms only).
    Text,
    /// Length-delimited protobuf `MetricFamily` messages (classic and native histograms).
    Protobuf,
}

impl Format {
    /// The `Content-Type` header value for a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT_CONTENT_TYPE,
            Self::Protobuf => PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// The text encoder's `fmt::Write` over a byte writer: what the writer fails with is kept in
/// `failed`, since `fmt::Error` carries nothing.
pub(super) struct IoText<'a> {
    pub(super) out: &'a mut dyn std::io::Write,
    pub(super) failed: Option<std::io::Error>,
}

impl std::fmt::Write for IoText<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.failed = Some(e);
            std::fmt::Error
        })
    }
}

/// Chooses the body format for a scrape's `Accept` header.
///
/// Protobuf only when a media range asks for
/// `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`
/// with a quality above zero and at least as high as every other range; text otherwise, including
/// for an empty or unparsable header (text is what every scraper understands).
pub fn negotiate(accept: &str) -> Format {
    let mut protobuf_q: Option<f32> = None;
    let mut other_q: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let mut q = 1.0_f32;
        let mut proto = None;
        let mut encoding = None;
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                // An unparsable quality means the range is not acceptable (RFC 9110 §12.4.2).
                "q" => q = value.parse().unwrap_or(0.0),
                "proto" => proto = Some(value),
                "encoding" => encoding = Some(value),
                _ => {}
            }
        }
        let is_protobuf = media.eq_ignore_ascii_case("application/vnd.google.protobuf")
            && proto == Some("io.prometheus.client.MetricFamily")
            && encoding.is_some_and(|e| e.eq_ignore_ascii_case("delimited"));
        if is_protobuf {
            protobuf_q = Some(protobuf_q.map_or(q, |p| p.max(q)));
        } else if !media.is_empty() {
            other_q = other_q.max(q);
        }
    }
    match protobuf_q {
        Some(q) if q > 0.0 && q >= other_q => Format::Protobuf,
        _ => Format::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_scenarios() {
        let cases = [
            ("", Format::Text),
            ("*/*", Format::Text),
            ("text/plain;version=0.0.4", Format::Text),
            // Prometheus 2.42 without native histograms.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                Format::Text,
            ),
            // Prometheus 2.42 with --enable-feature=native-histograms.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                 encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
                Format::Protobuf,
            ),
            (
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; \
                 encoding=delimited",
                Format::Protobuf,
            ),
            // Text preferred over protobuf.
            (
                "text/plain;q=0.9,application/vnd.google.protobuf;\
                 proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5",
                Format::Text,
            ),
            // Refused explicitly, wrong encoding, wrong message type.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                 encoding=delimited;q=0",
                Format::Text,
            ),
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                 encoding=text",
                Format::Text,
            ),
            (
                "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
                Format::Text,
            ),
            ("application/vnd.google.protobuf", Format::Text),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(accept), want, "Accept: {accept}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(
            Format::Protobuf
                .content_type()
                .contains("encoding=delimited")
        );
    }
}
