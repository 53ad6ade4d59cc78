//! `Accept-Encoding` on the scrape endpoints: Prometheus asks for gzip on every scrape, and a
//! text exposition shrinks about tenfold, so `/metrics` and `/probe` answer gzip when the client
//! accepts it, and identity otherwise.
//!
//! The level: zlib-rs (a port of zlib-ng) at level 2. On a 10,000-target text scrape
//! (`cargo bench --bench metrics -- "gzip level"`; bench/RESULTS.md, "Gzip level 2, and shared
//! sinks tried") its level 1 (zlib-ng's "quick" strategy, static Huffman codes) sends 45 % more
//! bytes to save a seventh of the time, and level 3 takes 17–36 % more time for 7 % fewer bytes.
//! The encoder writes many short pieces, so they reach the compressor through a buffer.

use std::io::{BufWriter, Write};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;

/// Whether the request accepts a gzip body: `gzip` (or `x-gzip`) listed with a q-value above 0,
/// or, when gzip is not named, `*` with one (RFC 9110, 12.5.3).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut named, mut any) = (None, None);
    for item in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        // A q-value that does not parse makes the item unusable, as if q=0.
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
            .unwrap_or(0.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            named = Some(named.map_or(q, |n: f32| n.max(q)));
        } else if coding == "*" {
            any = Some(q);
        }
    }
    named.or(any).is_some_and(|q| q > 0.0)
}

/// The gzip level of scrape bodies (see the module docs).
pub const LEVEL: u32 = 2;
/// What is gathered before the compressor runs: the text encoder writes a label or a number at
/// a time.
const BUFFER_BYTES: usize = 64 * 1024;

/// Runs `write` into a gzip stream and returns the compressed bytes: the body is compressed as
/// it is written, so the whole uncompressed body never sits in memory.
pub fn gzip_with<E: From<std::io::Error>>(
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    gzip_into(Vec::new(), write)
}

/// Runs `write` into a gzip stream whose compressed bytes go to `out` as they are made, and
/// returns `out` after the stream's end.
pub fn gzip_into<W: Write, E: From<std::io::Error>>(
    out: W,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<W, E> {
    gzip_at(LEVEL, out, write)
}

/// [`gzip_into`] at gzip level `level` (0–9; above 9 is 9) instead of [`LEVEL`]: for the
/// benchmark that chooses the level.
pub fn gzip_at<W: Write, E: From<std::io::Error>>(
    level: u32,
    out: W,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<W, E> {
    let mut input = BufWriter::with_capacity(
        BUFFER_BYTES,
        GzEncoder::new(out, Compression::new(level.min(9))),
    );
    write(&mut input)?;
    let gz = input.into_inner().map_err(|e| e.into_error())?;
    Ok(gz.finish()?)
}

/// A 200 answer of `content_type` with `body` (whole, or a stream), already gzip-compressed when
/// `gzipped`.
pub fn scrape_response(content_type: &str, body: impl IntoResponse, gzipped: bool) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type.to_owned())], body).into_response();
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// A 200 answer of `content_type` with `body`, compressed when the request accepts gzip.
pub fn negotiated(headers: &HeaderMap, content_type: &str, body: Vec<u8>) -> Response {
    if accepts_gzip(headers) {
        match gzip_with(|w: &mut dyn Write| w.write_all(&body)) {
            Ok(gz) => return scrape_response(content_type, gz, true),
            // Compressing into memory fails only without memory; the plain body still serves.
            Err(e) => tracing::warn!(error = %e, "gzip failed; answering uncompressed"),
        }
    }
    scrape_response(content_type, body, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accepts(value: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        accepts_gzip(&h)
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        // What Prometheus sends on every scrape.
        assert!(accepts("gzip"));
        assert!(accepts("deflate, gzip;q=1.0, *;q=0.5"));
        assert!(accepts("br, X-GZIP"));
        assert!(accepts("*"));
        assert!(!accepts("identity"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0.000, *"), "gzip named and refused");
        assert!(!accepts("*;q=0"));
        assert!(!accepts("gzip;q=nonsense"));
        assert!(!accepts(""));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_gzip_stream_decodes_to_what_was_written() {
        let text = "pingscope_sent_total{target=\"a\"} 1\n".repeat(1000);
        let gz = gzip_with(|w: &mut dyn Write| w.write_all(text.as_bytes())).unwrap();
        assert!(gz.len() * 10 < text.len(), "{} of {}", gz.len(), text.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }
}
