//! `--web.config.file`: the exporter-toolkit web config (TLS, basic auth, response headers).
//!
//! This module owns the file format (strict: unknown keys are errors), its validation, and the
//! [`WebConfig`] handle that re-reads the file and the files it names (certificate, key, client
//! CA) when their modification stamps change, at most once per [`RECHECK`]. The current state is
//! either a valid [`Loaded`] config or the error that made the latest version invalid; the HTTP
//! layer answers 500 while it is invalid, so a broken file never lets a request through.

mod tls;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderName, HeaderValue};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::config::read;

/// How often the files are looked at again (a stat each; a re-read only when they changed).
pub const RECHECK: Duration = Duration::from_secs(1);

/// Response headers the file may set, as the exporter toolkit allows them.
const ALLOWED_HEADERS: &[&str] = &[
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
];

/// Why a web config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file (or one it names) cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: read::ReadError,
    },
    /// The YAML does not match the format.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<tls::RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    headers: Option<BTreeMap<String, String>>,
    // Accepted for compatibility with the toolkit format; this server speaks HTTP/1.1 only.
    http2: Option<bool>,
}

/// Most verified credentials remembered per version of the file (the cache starts over past it).
const MAX_CACHED_CREDENTIALS: usize = 1024;

/// One valid version of the file, ready to use.
#[derive(Debug)]
pub struct Loaded {
    users: BTreeMap<String, String>,
    // Verified for unknown users so that they cost as much time as a wrong password.
    dummy_hash: String,
    // Keyed hashes of user, password and stored hash that bcrypt accepted; see `verify_cached`.
    verified: Mutex<HashSet<[u8; 32]>>,
    cache_key: [u8; 16],
    /// Extra headers put on every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// TLS settings, when `tls_server_config` is present.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Loaded {
    /// Whether basic auth is on.
    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks a user and password; slow on purpose (bcrypt), run it on a blocking thread.
    /// A success is remembered (see [`Loaded::verified_before`]).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => {
                let ok = bcrypt::verify(password, hash).unwrap_or(false);
                if ok {
                    let mut cache = self.verified.lock();
                    if cache.len() >= MAX_CACHED_CREDENTIALS {
                        cache.clear();
                    }
                    cache.insert(self.credential_key(user, password, hash));
                }
                ok
            }
            None => {
                let _ = bcrypt::verify(password, &self.dummy_hash);
                false
            }
        }
    }

    /// Whether bcrypt accepted this user and password before: a hash, fast, so valid scrapes
    /// need no bcrypt slot and a flood of wrong passwords cannot starve them. The key hashes
    /// user, password and stored hash together (as exporter-toolkit does since CVE-2022-46146),
    /// never the user alone, and a wrong password never matches an entry.
    pub fn verified_before(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key = self.credential_key(user, password, hash);
        self.verified.lock().contains(&key)
    }

    fn credential_key(&self, user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.cache_key);
        // Lengths first, so no two (user, password, hash) triples feed the same bytes.
        for part in [user, password, hash] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// Reads and validates the file once; the error names the file and the key at fault. An empty
/// file means no TLS and no auth (as in the exporter toolkit); see [`WebConfig`] for why a file
/// that becomes empty later is refused.
pub fn load(path: &Path) -> Result<Loaded, WebConfigError> {
    load_checked(path, true)
}

fn load_checked(path: &Path, empty_ok: bool) -> Result<Loaded, WebConfigError> {
    let text =
        read::read_text(path, read::MAX_WEB_FILE_BYTES).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    let empty =
        serde_saphyr::from_str::<Option<serde::de::IgnoredAny>>(&text).is_ok_and(|v| v.is_none());
    if empty && !empty_ok {
        return Err(WebConfigError::Invalid {
            path: path.to_owned(),
            message: "the file is empty now (truncated, or caught half-written); it is not applied, \
                      so that no accident turns auth or TLS off (write `{}` for a file without either)"
                .to_owned(),
        });
    }
    let raw: RawFile = if text.trim().is_empty() {
        RawFile::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|e| WebConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?
    };
    let invalid = |message: String| WebConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let users = raw.basic_auth_users.unwrap_or_default();
    let mut cost = 0;
    for (user, hash) in &users {
        if user.contains(':') {
            return Err(invalid(format!(
                "basic_auth_users: user name {user:?} must not contain ':'"
            )));
        }
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|e| invalid(format!("basic_auth_users.{user}: not a bcrypt hash ({e})")))?;
        cost = cost.max(parts.get_cost());
    }
    let dummy_hash = if users.is_empty() {
        String::new()
    } else {
        // Random so that no password matches it; same cost as the dearest real hash.
        let secret: [u8; 16] = rand::random();
        bcrypt::hash(secret, cost).map_err(|e| invalid(format!("basic_auth_users: {e}")))?
    };
    let headers = headers(raw.http_server_config.unwrap_or_default(), &invalid)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = match raw.tls_server_config {
        Some(t) => Some(Arc::new(tls::build(t, base, path)?)),
        None => None,
    };
    Ok(Loaded {
        users,
        dummy_hash,
        verified: Mutex::new(HashSet::new()),
        cache_key: rand::random(),
        headers,
        tls,
    })
}

fn headers(
    http: RawHttp,
    invalid: &dyn Fn(String) -> WebConfigError,
) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
    let _ = http.http2;
    let mut out = Vec::new();
    for (name, value) in http.headers.unwrap_or_default() {
        let Some(known) = ALLOWED_HEADERS
            .iter()
            .find(|h| h.eq_ignore_ascii_case(&name))
        else {
            return Err(invalid(format!(
                "http_server_config.headers: header {name:?} cannot be configured (allowed: {})",
                ALLOWED_HEADERS.join(", ")
            )));
        };
        let expected: &[&str] = match *known {
            "X-Frame-Options" => &["deny", "sameorigin"],
            "X-Content-Type-Options" => &["nosniff"],
            _ => &[],
        };
        if !expected.is_empty() && !expected.iter().any(|e| e.eq_ignore_ascii_case(&value)) {
            return Err(invalid(format!(
                "http_server_config.headers: invalid value {value:?} for {known} (expected one of {expected:?})"
            )));
        }
        let value = HeaderValue::from_str(&value).map_err(|_| {
            invalid(format!(
                "http_server_config.headers: value of {known} is not a valid header value"
            ))
        })?;
        out.push((HeaderName::from_static(lower(known)), value));
    }
    Ok(out)
}

fn lower(known: &str) -> &'static str {
    match known {
        "Content-Security-Policy" => "content-security-policy",
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        _ => "x-xss-protection",
    }
}

/// A file's identity and version: changes when it is rewritten or replaced.
type Stamp = (PathBuf, Option<SystemTime>, u64, u64);

fn stamps(path: &Path) -> Vec<Stamp> {
    let mut paths = vec![path.to_owned()];
    paths.extend(tls::named_files(path));
    paths
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let ino = meta.map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m));
            (p, modified, len, ino)
        })
        .collect()
}

/// The current state: a valid config, or why the latest version is not valid.
pub type Current = Arc<Result<Loaded, String>>;

struct State {
    checked: Instant,
    stamps: Vec<Stamp>,
    current: Current,
    // Handshakes keep using the last good TLS config while the file is invalid; every request
    // on such a connection is answered 500 by the HTTP layer.
    last_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Handle on the web config file that follows its changes. Cheap to clone.
#[derive(Clone)]
pub struct WebConfig {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tls_at_start: bool,
    auth_at_start: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.inner.path)
            .field("tls", &self.inner.tls_at_start)
            .finish_non_exhaustive()
    }
}

impl WebConfig {
    /// Loads the file; an invalid file is an error here (startup refuses to run with it).
    pub fn open(path: &Path) -> Result<Self, WebConfigError> {
        let stamps = stamps(path);
        let loaded = load(path)?;
        let tls = loaded.tls.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                tls_at_start: tls.is_some(),
                auth_at_start: loaded.auth_required(),
                state: Mutex::new(State {
                    checked: Instant::now(),
                    stamps,
                    current: Arc::new(Ok(loaded)),
                    last_tls: tls,
                }),
            }),
        })
    }

    /// Whether the listeners speak TLS (fixed at startup).
    pub fn tls(&self) -> bool {
        self.inner.tls_at_start
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current state, re-reading the files first if they changed (checked at most once per
    /// [`RECHECK`]; the re-read runs on a blocking thread).
    pub async fn current(&self) -> Current {
        let due = {
            let mut s = self.inner.state.lock();
            if s.checked.elapsed() < RECHECK {
                return s.current.clone();
            }
            // Claim this check so concurrent callers keep the current state meanwhile.
            s.checked = Instant::now();
            s.current.clone()
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.refresh())
            .await
            .unwrap_or(due)
    }

    /// The TLS config for the next handshake: the current one, or the last good one while the
    /// file is invalid.
    pub async fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        let current = self.current().await;
        match &*current {
            Ok(l) if l.tls.is_some() => l.tls.clone(),
            _ => self.inner.state.lock().last_tls.clone(),
        }
    }

    fn refresh(&self) -> Current {
        let now = stamps(&self.inner.path);
        {
            let s = self.inner.state.lock();
            if s.stamps == now {
                return s.current.clone();
            }
        }
        // Only a file that parses, and keeps auth on when it was on, is applied: anything else
        // is served as 500 (fail closed) until the file is fixed.
        let result = match load_checked(&self.inner.path, false) {
            Ok(l) if l.tls.is_some() != self.inner.tls_at_start => Err(format!(
                "{}: adding or removing tls_server_config needs a restart",
                self.inner.path.display()
            )),
            Ok(l) if self.inner.auth_at_start && !l.auth_required() => Err(format!(
                "{}: removing basic_auth_users needs a restart",
                self.inner.path.display()
            )),
            Ok(l) => Ok(l),
            Err(e) => Err(e.to_string()),
        };
        match &result {
            Ok(_) => tracing::info!(file = %self.inner.path.display(), "web config reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "web config invalid; every request is refused with 500 until it is fixed");
            }
        }
        let mut s = self.inner.state.lock();
        if let Ok(l) = &result
            && l.tls.is_some()
        {
            s.last_tls = l.tls.clone();
        }
        s.stamps = now;
        s.current = Arc::new(result);
        s.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Loaded, WebConfigError> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        load(&path)
    }

    fn error(text: &str) -> String {
        match load_text(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let loaded = load(Path::new("config/web-config.yml"));
        assert!(loaded.is_ok(), "{loaded:?}");
    }

    #[test]
    fn an_empty_file_means_no_tls_and_no_auth() {
        let l = load_text("").map_err(|e| e.to_string());
        assert!(
            matches!(&l, Ok(l) if !l.auth_required() && l.tls.is_none() && l.headers.is_empty()),
            "{l:?}"
        );
    }

    #[test]
    fn rejections_name_the_key() {
        let cases = [
            ("foo: 1\n", "unknown field"),
            ("tls_server_config:\n  cert: x\n", "unknown field"),
            (
                "http_server_config:\n  headers:\n    X-Foo: bar\n",
                "header \"X-Foo\" cannot be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "invalid value \"allow\" for X-Frame-Options",
            ),
            (
                "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
                "for X-Content-Type-Options",
            ),
            (
                "basic_auth_users:\n  alice: notahash\n",
                "basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n",
                "both cert_file and key_file are required",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "TLS10 is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "min_version is above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                "client_auth_type: invalid \"Sometimes\"",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "client_auth_type is NoClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
                "missing.crt",
            ),
        ];
        for (text, want) in cases {
            let e = error(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn headers_keep_their_values() {
        let l = load_text("http_server_config:\n  headers:\n    x-frame-options: DENY\n    Strict-Transport-Security: max-age=60\n")
            .map_err(|e| e.to_string());
        let Ok(l) = l else { panic!("{l:?}") };
        let got: Vec<(String, String)> = l
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "strict-transport-security".to_owned(),
                    "max-age=60".to_owned()
                ),
                ("x-frame-options".to_owned(), "DENY".to_owned())
            ]
        );
    }

    #[test]
    fn verify_accepts_only_the_password_never_the_hash() {
        let Ok(hash) = bcrypt::hash("s3cret", 4) else {
            panic!("hashing")
        };
        let l =
            load_text(&format!("basic_auth_users:\n  alice: {hash}\n")).map_err(|e| e.to_string());
        let Ok(l) = l else { panic!("{l:?}") };
        assert!(l.verify("alice", "s3cret"));
        assert!(!l.verify("alice", "wrong"));
        assert!(!l.verify("alice", &hash));
        assert!(!l.verify("bob", "s3cret"));
        assert!(l.verify("alice", "s3cret"));
        assert!(!l.verify("alice", &hash));
    }
}
