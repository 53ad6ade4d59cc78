//! One request type for every front, and the one function that checks it.
//!
//! A front turns what it received (flags, a query string, a JSON body) into a [`RawRequest`] of
//! texts, and calls [`validate`] with its [`Defaults`] and [`Limits`]. Every rule lives in
//! [`super::rules`], so the same bad value gets the same message on every front.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules;
use crate::engine::{ProbeSpec, SocketOptions, Transport, UdpMode};
use crate::resolve::Family;

/// What a probe sends and what settles it: the seam where new kinds are added, once, for every
/// front.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// ICMP echo request; settles on the echo reply, an ICMP error or the timeout.
    #[default]
    Icmp,
    /// Per-hop rounds, mtr-style ([`super::path`]): `pingscope trace` and path monitors.
    Path,
    /// One SYN to a port; settles on the SYN-ACK or a RST (both replies), an ICMP error or the
    /// timeout.
    Tcp,
    /// One datagram to a port: to a closed port (the port unreachable is the reply) or to a UDP
    /// echo service (the echo is the reply).
    Udp,
}

impl ProbeKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [Self; 4] = [Self::Icmp, Self::Path, Self::Tcp, Self::Udp];

    /// The name used in config, query strings, bodies and samples.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Path => "path",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// True for the kinds that probe a port.
    pub fn has_port(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }

    /// Whether probes of this kind go out on ICMP sockets (and so need their permission).
    pub fn uses_icmp(self) -> bool {
        matches!(self, Self::Icmp | Self::Path)
    }

    /// The kind of this name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == t)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {t:?} (use {})", names.join(", "))
            })
    }
}

/// A checked request: what to probe, how often, for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRequest {
    /// The host as given (name or address).
    pub target: String,
    /// What kind of probe.
    pub kind: ProbeKind,
    /// Probes per address; `None`: until the duration ends or the run is stopped.
    pub count: Option<u64>,
    /// How long to keep sending; `None`: until the count is reached or the run is stopped.
    pub duration: Option<Duration>,
    /// Time between probes to one address.
    pub interval: Duration,
    /// How long each probe waits for its reply.
    pub timeout: Duration,
    /// Payload bytes.
    pub size: u16,
    /// Which addresses of the target to probe.
    pub family: Family,
    /// TTL, TOS, source address and interface.
    pub options: SocketOptions,
    /// The port of a TCP or UDP probe, and what a UDP probe expects there.
    pub port: PortOptions,
}

/// The port of a TCP or UDP probe (`None` for the other kinds), and what a UDP probe expects
/// at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortOptions {
    /// Destination port.
    pub port: Option<u16>,
    /// UDP only: a closed port or an echo service.
    pub udp_mode: UdpMode,
}

impl ProbeRequest {
    /// What the engine needs to send one probe of this request to `ip`.
    pub fn spec(&self, ip: IpAddr) -> ProbeSpec {
        spec(
            self.kind,
            ip,
            self.size,
            self.timeout,
            self.options.clone(),
            self.port,
        )
    }

    /// The longest this request can run: its duration, or its count's last probe plus its
    /// timeout; `None` when it runs until stopped.
    pub fn planned_run(&self) -> Option<Duration> {
        let by_count = self.count.map(|c| {
            self.interval
                .saturating_mul(u32::try_from(c - 1).unwrap_or(u32::MAX))
                + self.timeout
        });
        match (by_count, self.duration) {
            (Some(c), Some(d)) => Some(c.min(d)),
            (c, d) => c.or(d),
        }
    }
}

/// The probe spec of one probe of this kind to `ip`: shared by the runner and the monitors.
pub fn spec(
    kind: ProbeKind,
    ip: IpAddr,
    size: u16,
    timeout: Duration,
    options: SocketOptions,
    port: PortOptions,
) -> ProbeSpec {
    // Validation gives TCP and UDP requests a port; 0 would only fail to connect.
    let number = port.port.unwrap_or(0);
    let transport = match kind {
        // A path's own probes are built per hop by its tracer; its plain spec is the echo to
        // the destination.
        ProbeKind::Icmp | ProbeKind::Path => Transport::Icmp,
        ProbeKind::Tcp => Transport::Tcp { port: number },
        ProbeKind::Udp => Transport::Udp {
            port: number,
            mode: port.udp_mode,
        },
    };
    ProbeSpec {
        ip,
        transport,
        size,
        timeout,
        options,
    }
}

/// A request as a front received it: texts, none checked yet. `None` takes the front's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRequest {
    /// `target`.
    pub target: Option<String>,
    /// `kind`.
    pub kind: Option<String>,
    /// `count`.
    pub count: Option<String>,
    /// `duration`.
    pub duration: Option<String>,
    /// `interval`.
    pub interval: Option<String>,
    /// `timeout`.
    pub timeout: Option<String>,
    /// `size`.
    pub size: Option<String>,
    /// `family`.
    pub family: Option<String>,
    /// `ttl`.
    pub ttl: Option<String>,
    /// `tos`.
    pub tos: Option<String>,
    /// `source`.
    pub source: Option<String>,
    /// `interface`.
    pub interface: Option<String>,
    /// `port`.
    pub port: Option<String>,
    /// `udp_mode`.
    pub udp_mode: Option<String>,
    /// Durations may also be bare seconds (`0.2`), as the CLI takes them from iputils ping.
    pub plain_seconds: bool,
}

/// What a front fills in for values the request leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// Kind of probe.
    pub kind: ProbeKind,
    /// Probes; `None`: until stopped (unless a duration is given).
    pub count: Option<u64>,
    /// Between probes.
    pub interval: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Payload bytes.
    pub size: u16,
    /// Address family.
    pub family: Family,
    /// Port and UDP mode.
    pub port: PortOptions,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            kind: ProbeKind::Icmp,
            count: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            size: 56,
            family: Family::Auto,
            port: PortOptions::default(),
        }
    }
}

/// What a front allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Shortest interval a caller may ask for (its defaults are the operator's and trusted).
    pub min_interval: Duration,
    /// Longest interval a caller may ask for, when there is a bound.
    pub max_interval: Option<Duration>,
    /// Most probes a caller may ask for.
    pub max_count: Option<u64>,
    /// Longest run, with the name of the setting that says so (for the message).
    pub max_run: Option<(Duration, &'static str)>,
    /// The front probes one address per request (`family: all` makes no sense there).
    pub one_address: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_interval: rules::MIN_INTERVAL,
            max_interval: None,
            max_count: None,
            max_run: None,
            one_address: false,
        }
    }
}

/// A request refused: which field, and the sentence that says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The field at fault, by its request name.
    pub field: &'static str,
    /// What is wrong, naming the value.
    pub message: String,
}

/// Turns a rule's message into the error of `field`.
pub(crate) fn at(field: &'static str) -> impl Fn(String) -> RequestError {
    move |message| RequestError { field, message }
}

/// The whole number `text` of `field`, if given.
pub(crate) fn number(
    field: &'static str,
    text: &Option<String>,
) -> Result<Option<i64>, RequestError> {
    text.as_deref()
        .map(|t| rules::parse_number_of(field, t).map_err(at(field)))
        .transpose()
}

fn duration_of(
    field: &'static str,
    text: &Option<String>,
    plain_seconds: bool,
) -> Result<Option<Duration>, RequestError> {
    text.as_deref()
        .map(|t| rules::parse_duration_of(field, t, plain_seconds).map_err(at(field)))
        .transpose()
}

/// Checks a request against the front's limits and fills in its defaults. The first rule that
/// fails is reported, fields in the order of [`RawRequest`].
pub fn validate(
    raw: &RawRequest,
    defaults: &Defaults,
    limits: &Limits,
) -> Result<ProbeRequest, RequestError> {
    let target = rules::target(raw.target.as_deref().unwrap_or("")).map_err(at("target"))?;
    let zone = rules::zone(&target).map_err(at("target"))?;
    let kind = raw
        .kind
        .as_deref()
        .map(ProbeKind::parse)
        .transpose()
        .map_err(at("kind"))?
        .unwrap_or(defaults.kind);
    let count = match number("count", &raw.count)? {
        Some(n) => Some(rules::count(n, limits.max_count).map_err(at("count"))?),
        None => defaults.count,
    };
    let duration = match duration_of("duration", &raw.duration, raw.plain_seconds)? {
        Some(d) => Some(rules::positive("duration", d).map_err(at("duration"))?),
        None => None,
    };
    // Asked for a duration and no count: the duration alone bounds the run.
    let count = if raw.count.is_none() && duration.is_some() {
        None
    } else {
        count
    };
    let interval = match duration_of("interval", &raw.interval, raw.plain_seconds)? {
        Some(d) => rules::interval(d, limits.min_interval)
            .and_then(|d| rules::interval_at_most(d, limits.max_interval))
            .map_err(at("interval"))?,
        None => defaults.interval,
    };
    let timeout = match duration_of("timeout", &raw.timeout, raw.plain_seconds)? {
        Some(d) => rules::timeout(d).map_err(at("timeout"))?,
        None => defaults.timeout,
    };
    let family = match raw.family.as_deref() {
        Some(t) => rules::family(t, limits.one_address).map_err(at("family"))?,
        None if limits.one_address && defaults.family == Family::All => Family::Auto,
        None => defaults.family,
    };
    let size = match number("size", &raw.size)? {
        Some(n) => rules::size(n, family).map_err(at("size"))?,
        None => rules::size(i64::from(defaults.size), family).map_err(at("size"))?,
    };
    let ttl = number("ttl", &raw.ttl)?
        .map(|n| rules::ttl(n).map_err(at("ttl")))
        .transpose()?;
    let tos = number("tos", &raw.tos)?
        .map(|n| rules::tos(n).map_err(at("tos")))
        .transpose()?;
    let source = match raw.source.as_deref() {
        Some(t) => {
            let ip = t
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| at("source")(format!("source {t:?} is not an IP address")))?;
            Some(rules::source(ip, family).map_err(at("source"))?)
        }
        None => None,
    };
    let interface = raw
        .interface
        .as_deref()
        .map(|t| rules::interface(t).map_err(at("interface")))
        .transpose()?;
    let interface = rules::zone_interface(zone, interface).map_err(at("interface"))?;
    let port = match number("port", &raw.port)? {
        Some(n) => Some(rules::port(n).map_err(at("port"))?),
        None => defaults.port.port,
    };
    let port = PortOptions {
        port: rules::port_for_kind(kind, port).map_err(at("port"))?,
        udp_mode: match raw.udp_mode.as_deref() {
            Some(t) => rules::udp_mode(t).map_err(at("udp_mode"))?,
            None => defaults.port.udp_mode,
        },
    };
    let request = ProbeRequest {
        target,
        kind,
        count,
        duration,
        interval,
        timeout,
        size,
        family,
        options: SocketOptions {
            ttl,
            tos,
            source,
            interface,
        },
        port,
    };
    if let Some((max, setting)) = limits.max_run {
        let planned = request.planned_run().unwrap_or(Duration::MAX);
        if planned > max {
            let field = if raw.duration.is_some() && raw.count.is_none() {
                "duration"
            } else {
                "count"
            };
            let ran = if planned == Duration::MAX {
                "until stopped".to_owned()
            } else {
                rules::spell(planned)
            };
            return Err(at(field)(format!(
                "the probes would run {ran}, above {setting} {} (lower \"count\" or \"duration\", or raise \"interval\")",
                rules::spell(max)
            )));
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawRequest {
        let mut r = RawRequest {
            target: Some("h".to_owned()),
            ..RawRequest::default()
        };
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "target" => r.target = v,
                "kind" => r.kind = v,
                "count" => r.count = v,
                "duration" => r.duration = v,
                "interval" => r.interval = v,
                "timeout" => r.timeout = v,
                "size" => r.size = v,
                "family" => r.family = v,
                "ttl" => r.ttl = v,
                "tos" => r.tos = v,
                "source" => r.source = v,
                "interface" => r.interface = v,
                "port" => r.port = v,
                "udp_mode" => r.udp_mode = v,
                other => panic!("no field {other}"),
            }
        }
        r
    }

    fn session_limits() -> Limits {
        Limits {
            max_interval: None,
            min_interval: Duration::from_millis(10),
            max_count: None,
            max_run: Some((Duration::from_secs(600), "sessions.max_duration")),
            one_address: true,
        }
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let d = Defaults {
            count: Some(10),
            ..Defaults::default()
        };
        let r = validate(&raw(&[]), &d, &Limits::default()).expect("valid");
        assert_eq!(r.count, Some(10));
        assert_eq!(r.interval, Duration::from_secs(1));
        assert_eq!(r.kind, ProbeKind::Icmp);
        // A duration alone replaces the default count.
        let r = validate(&raw(&[("duration", "5s")]), &d, &Limits::default()).expect("valid");
        assert_eq!((r.count, r.duration), (None, Some(Duration::from_secs(5))));
    }

    #[test]
    fn refusals_name_the_field() {
        let d = Defaults {
            count: Some(10),
            ..Defaults::default()
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("target", " ")],
                "target",
                "target must not be empty: name the host to probe",
            ),
            (
                &[("kind", "ssh")],
                "kind",
                "unknown kind \"ssh\" (use icmp, path, tcp, udp)",
            ),
            (
                &[("count", "0")],
                "count",
                "count must be at least 1, got 0",
            ),
            (
                &[("interval", "5ms")],
                "interval",
                "interval 5ms is below the minimum of 10ms",
            ),
            (
                &[("interval", "soon")],
                "interval",
                "interval: invalid duration \"soon\": expected a number before \"soon\"",
            ),
            (
                &[("family", "all")],
                "family",
                "family \"all\" is not possible here: this probes one address (use auto, ip4 or ip6)",
            ),
            (
                &[("source", "::1"), ("family", "ip4")],
                "source",
                "source ::1 is IPv6 but family is ip4",
            ),
            (
                &[("duration", "11m")],
                "duration",
                "the probes would run 11m, above sessions.max_duration 10m (lower \"count\" or \"duration\", or raise \"interval\")",
            ),
            (
                &[("count", "700")],
                "count",
                "the probes would run 11m41s, above sessions.max_duration 10m (lower \"count\" or \"duration\", or raise \"interval\")",
            ),
        ];
        for (pairs, field, message) in cases {
            let err = validate(&raw(pairs), &d, &session_limits()).expect_err("refused");
            assert_eq!(
                (err.field, err.message.as_str()),
                (*field, *message),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn the_operators_defaults_are_not_held_to_the_callers_floor() {
        let d = Defaults {
            count: Some(10),
            interval: Duration::from_millis(1),
            ..Defaults::default()
        };
        assert!(validate(&raw(&[]), &d, &session_limits()).is_ok());
        let asked = validate(&raw(&[("interval", "1ms")]), &d, &session_limits());
        assert_eq!(
            asked.map_err(|e| e.message),
            Err("interval 1ms is below the minimum of 10ms".to_owned())
        );
    }

    #[test]
    fn planned_run_takes_what_ends_first() {
        let mut r = validate(
            &raw(&[("count", "3")]),
            &Defaults::default(),
            &Limits::default(),
        )
        .expect("valid");
        assert_eq!(r.planned_run(), Some(Duration::from_secs(4)));
        r.duration = Some(Duration::from_secs(1));
        assert_eq!(r.planned_run(), Some(Duration::from_secs(1)));
        r.count = None;
        r.duration = None;
        assert_eq!(r.planned_run(), None);
    }
}
