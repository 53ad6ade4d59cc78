//! The built-in live page: `ui/` embedded in the binary and served at `/` and `/ui/*`.
//!
//! Plain files, no build step and nothing fetched from elsewhere, so the page works offline.
//! Every response carries a strong ETag (a hash of the embedded bytes, fixed at compile time)
//! and `Cache-Control: no-cache`: browsers revalidate and get a 304, and a new binary is never
//! shadowed by a stale cached script.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: &'static str,
}

/// FNV-1a, 64 bit: enough to tell two versions of a file apart; not a security measure.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits + `"`, built at compile time.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $file));
        const TAG: [u8; 18] = etag_bytes(BODY);
        Asset {
            body: BODY,
            content_type: $type,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => "\"0\"",
            },
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const CSS: Asset = asset!("app.css", "text/css; charset=utf-8");
const JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
const CHART: Asset = asset!("chart.js", "text/javascript; charset=utf-8");
const MESH: Asset = asset!("mesh.js", "text/javascript; charset=utf-8");
const PATH: Asset = asset!("path.js", "text/javascript; charset=utf-8");

/// The page may load only its own files and talk only to its own origin (WebSocket included).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        }) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `GET /`: the live page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /ui/{file}`: the page's stylesheet and scripts.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = match name.as_str() {
        "app.css" => &CSS,
        "app.js" => &JS,
        "chart.js" => &CHART,
        "mesh.js" => &MESH,
        "path.js" => &PATH,
        _ => return Err(ApiError::not_found(format!("no UI file {name:?}"))),
    };
    Ok(serve(asset, &headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_per_file_and_are_quoted_hex() {
        let tags = [INDEX.etag, CSS.etag, JS.etag, CHART.etag, PATH.etag];
        for t in tags {
            assert_eq!(t.len(), 18);
            assert!(t.starts_with('"') && t.ends_with('"'));
            assert!(t[1..17].bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
        }
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn fnv_matches_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[tokio::test]
    async fn revalidation_answers_304_and_unknown_files_404() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(JS.etag));
        let r = file(Path("app.js".into()), h)
            .await
            .map_err(|e| e.message)
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = file(Path("app.js".into()), HeaderMap::new())
            .await
            .map_err(|e| e.message)
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(r.headers()[header::ETAG], JS.etag);
        let e = file(Path("../Cargo.toml".into()), HeaderMap::new())
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let r = index(HeaderMap::new()).await;
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
