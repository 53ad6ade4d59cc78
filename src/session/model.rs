//! The stored shape of a session: its id, parameters, status and the pages the history is read in.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::SocketOptions;
use crate::engine::UdpMode;
use crate::probe::path::{PathOptions, PathProtocol};
use crate::probe::request::PortOptions;
use crate::probe::{ProbeKind, ProbeRequest};
use crate::resolve::Family;
use crate::sample::{Sample, Summary};

/// A session id: a UUIDv7, so ids are unguessable (74 random bits) and sort by creation time.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, format = Uuid)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh id; ids made later in this process sort after earlier ones.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The UUID behind the id.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hyphenated lowercase: the spelling stored in SQLite, so text order is time order.
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A string that is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id {input:?}: {reason}")]
pub struct ParseSessionIdError {
    input: String,
    reason: &'static str,
}

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseSessionIdError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let uuid = Uuid::try_parse(s).map_err(|_| err("not a UUID"))?;
        // Only ids this program issues are accepted: other versions are not time-ordered.
        if uuid.get_version_num() != 7 {
            return Err(err("not a version 7 UUID"));
        }
        Ok(Self(uuid))
    }
}

impl TryFrom<String> for SessionId {
    type Error = ParseSessionIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.to_string()
    }
}

/// What a session probes and how, with every default already applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionParams {
    /// Host name or address to ping.
    pub target: String,
    /// What kind of probe (absent in sessions stored before kinds existed: `icmp`).
    #[serde(default)]
    pub kind: ProbeKind,
    /// Number of probes; absent when the session runs for `duration` (or until stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// How long the session runs, e.g. `"30s"`.
    #[serde(
        default,
        with = "crate::duration::serde_duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "30s")]
    pub duration: Option<Duration>,
    /// Time between probes, e.g. `"200ms"`.
    #[serde(with = "crate::duration::serde_duration")]
    #[schema(value_type = String, example = "200ms")]
    pub interval: Duration,
    /// How long to wait for each reply, e.g. `"1s"`.
    #[serde(with = "crate::duration::serde_duration")]
    #[schema(value_type = String, example = "1s")]
    pub timeout: Duration,
    /// ICMP payload size in bytes.
    pub size: u16,
    /// Which addresses of the target to probe.
    pub family: Family,
    /// IPv4 TTL / IPv6 hop limit; absent: the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// TOS byte / traffic class; absent: the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos: Option<u8>,
    /// Port of a `tcp` or `udp` session; absent for the other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What a `udp` session expects at its port: `closed` or `echo`; absent for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub udp_mode: Option<UdpMode>,
    /// The path options of a `kind: path` session (absent for other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathParams>,
}

/// The path options of a session, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathParams {
    /// First TTL probed.
    pub first_ttl: u8,
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// Paris flows per round.
    pub flows: u16,
    /// What is sent at each hop (`icmp` when stored before UDP paths).
    #[serde(default)]
    #[schema(value_type = String)]
    pub protocol: PathProtocol,
    /// Gap between two probes of a round (the default when stored before it was a parameter).
    #[serde(default = "default_pace", with = "crate::duration::serde_duration")]
    #[schema(value_type = String, example = "10ms")]
    pub pace: Duration,
}

fn default_pace() -> Duration {
    crate::probe::path::DEFAULT_PACE
}

impl PathParams {
    /// As the tracer takes them.
    pub fn options(&self) -> PathOptions {
        PathOptions {
            first_ttl: self.first_ttl,
            max_ttl: self.max_ttl,
            flows: self.flows,
            protocol: self.protocol,
            pace: self.pace,
        }
    }
}

impl From<&PathOptions> for PathParams {
    fn from(o: &PathOptions) -> Self {
        Self {
            first_ttl: o.first_ttl,
            max_ttl: o.max_ttl,
            flows: o.flows,
            protocol: o.protocol,
            pace: o.pace,
        }
    }
}

impl SessionParams {
    /// The session as a request of the shared runner.
    pub fn request(&self) -> ProbeRequest {
        ProbeRequest {
            target: self.target.clone(),
            kind: self.kind,
            count: self.count.map(u64::from),
            duration: self.duration,
            interval: self.interval,
            timeout: self.timeout,
            size: self.size,
            family: self.family,
            options: SocketOptions {
                ttl: self.ttl,
                tos: self.tos,
                // A link-local target's zone (`fe80::1%eth0`), checked when the session started.
                interface: crate::probe::rules::zone(&self.target).ok().flatten(),
                ..SocketOptions::default()
            },
            port: PortOptions {
                port: self.port,
                udp_mode: self.udp_mode.unwrap_or_default(),
            },
        }
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Probing now.
    Running,
    /// Ran to its count or duration.
    Completed,
    /// Stopped on request.
    Stopped,
    /// Could not run (e.g. the target did not resolve).
    Failed,
    /// Cut by a restart or crash of the daemon; keeps the samples it had.
    Interrupted,
}

impl SessionStatus {
    /// The stored and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    /// The status spelled `s`, if any.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Completed,
            Self::Stopped,
            Self::Failed,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session as stored, without its samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRecord {
    /// The session id.
    pub id: SessionId,
    /// What the session probes.
    pub params: SessionParams,
    /// Where the session is in its life.
    pub status: SessionStatus,
    /// RFC 3339 time the session was accepted.
    #[serde(with = "time_str")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    /// RFC 3339 time the first probe was due.
    #[serde(default, with = "time_opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<SystemTime>,
    /// RFC 3339 time the session ended; absent while running and for interrupted sessions.
    #[serde(default, with = "time_opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<SystemTime>,
    /// Why the session failed or was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The closing summary, once the session has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Samples stored for the session.
    #[serde(default)]
    pub sample_count: u64,
    /// Samples of the session the store could not keep (its queue was full, or a write
    /// failed); when above 0, `error` says so too.
    #[serde(default)]
    pub samples_lost: u64,
}

impl SessionRecord {
    /// A new `running` session with a fresh id, created and started now.
    pub fn start(params: SessionParams) -> Self {
        // Truncated to the microsecond the store keeps, so the record equals its stored copy.
        let now = std::time::UNIX_EPOCH
            + SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(Duration::ZERO, |d| {
                    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                });
        Self {
            id: SessionId::new(),
            params,
            status: SessionStatus::Running,
            created_at: now,
            started_at: Some(now),
            ended_at: None,
            error: None,
            summary: None,
            sample_count: 0,
            samples_lost: 0,
        }
    }
}

/// A session with every sample, in the order they were recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub record: SessionRecord,
    /// Every stored sample, oldest first.
    pub samples: Vec<Sample>,
}

/// One page of the history, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page {
    /// Sessions of this page, newest first.
    pub items: Vec<SessionRecord>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<SessionId>,
    /// Sessions stored in all.
    pub total: u64,
}

pub(crate) mod time_str {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::sample::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod time_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&crate::sample::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_parses_only_v7() {
        let id = SessionId::new();
        assert_eq!(id.to_string().parse::<SessionId>(), Ok(id));
        assert!("not-a-uuid".parse::<SessionId>().is_err());
        // A version 4 UUID is well-formed but not an id this program issues.
        let v4 = "0b6f6a8e-3c1d-4f5e-9a2b-1c2d3e4f5a6b";
        let err = v4
            .parse::<SessionId>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("version 7"), "{err}");
        let later = SessionId::new();
        assert!(later > id && later.to_string() > id.to_string());
    }

    #[test]
    fn openapi_schemas_match_the_json() {
        #[derive(utoipa::OpenApi)]
        #[openapi(components(schemas(SessionDetail, Page)))]
        struct Doc;
        let doc = serde_json::to_value(<Doc as utoipa::OpenApi>::openapi()).unwrap_or_default();
        let schemas = &doc["components"]["schemas"];
        let params = &schemas["SessionParams"]["properties"];
        assert_eq!(params["interval"]["type"], "string", "{params}");
        assert_eq!(schemas["SessionId"]["type"], "string", "{schemas}");
        assert_eq!(schemas["SessionId"]["format"], "uuid", "{schemas}");
        let statuses = schemas["SessionStatus"]["enum"].to_string();
        assert!(statuses.contains("interrupted"), "{statuses}");
        let detail = schemas["SessionDetail"].to_string();
        assert!(
            detail.contains("samples") && detail.contains("SessionRecord"),
            "{detail}"
        );
        let record = &schemas["SessionRecord"]["properties"];
        assert_eq!(record["created_at"]["format"], "date-time", "{record}");
    }

    #[test]
    fn params_serialize_durations_as_strings() {
        let json = serde_json::json!({
            "target": "localhost",
            "kind": "icmp",
            "count": 5,
            "interval": "200ms",
            "timeout": "1s",
            "size": 56,
            "family": "ip4",
        });
        let p: SessionParams = serde_json::from_value(json.clone())
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.interval, p.timeout, p.family, p.duration),
            (
                Duration::from_millis(200),
                Duration::from_secs(1),
                Family::Ip4,
                None
            )
        );
        assert_eq!(serde_json::to_value(&p).unwrap_or_default(), json);
    }
}
