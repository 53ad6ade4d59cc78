//! Name resolution per address family, with the record TTL so callers can re-resolve in time.
//!
//! [`Resolver`] wraps hickory-resolver: the system configuration by default, or a given list of
//! servers (UDP and TCP) for `--dns-server` and for tests, which start their own server on
//! loopback. IP literals never reach DNS: [`parse_ip_literal`] accepts every IPv4 spelling
//! `inet_aton(3)` accepts, IPv6 (bracketed or not), and folds IPv4-mapped IPv6 to IPv4. A
//! link-local IPv6 literal may carry a zone id (`fe80::1%eth0`, see [`split_zone`]); a host with
//! a `%` that is not one is refused in words, never looked up. [`Resolver::reverse`] asks for an
//! address's PTR name; [`names::ReverseNames`] caches those for the page's hop tables.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use serde::{Deserialize, Serialize};

pub mod names;

/// Which addresses of a host to probe.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// One address: IPv4 when the host has one, else IPv6.
    #[default]
    Auto,
    /// One IPv4 address.
    Ip4,
    /// One IPv6 address.
    Ip6,
    /// Every address the host resolves to, both families.
    All,
}

impl Family {
    /// The config/query spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ip4 => "ip4",
            Self::Ip6 => "ip6",
            Self::All => "all",
        }
    }
}

/// Why a host did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist, or has no address records at all.
    #[error("{host}: name not found")]
    NotFound {
        /// The host as given.
        host: String,
    },
    /// The name exists but has no address of the requested family.
    #[error("{host}: no address for family {}", family.as_str())]
    NoAddressForFamily {
        /// The host as given.
        host: String,
        /// The requested family.
        family: Family,
    },
    /// No server answered in time.
    #[error("{host}: DNS lookup timed out")]
    Timeout {
        /// The host as given.
        host: String,
    },
    /// An IPv6 zone id that cannot be used (see [`split_zone`]); never sent to DNS.
    #[error("{0}")]
    Zone(String),
    /// Any other failure of the lookup.
    #[error("{host}: DNS lookup failed: {source}")]
    Io {
        /// The host as given.
        host: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The resolver could not be set up (e.g. unreadable /etc/resolv.conf).
    #[error("cannot set up the DNS resolver ({what}): {source}")]
    Config {
        /// Which configuration.
        what: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// The addresses a host resolved to, and until when they may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The selected addresses (one for `auto`/`ip4`/`ip6`; IPv4 first for `all`).
    pub addrs: Vec<IpAddr>,
    /// When the records expire (their TTL); far in the future for literals.
    pub valid_until: Instant,
}

/// A DNS resolver; cheap to clone (clones share the cache and connections).
///
/// The configuration is read and checked when the resolver is made; the hickory resolver itself
/// (cache, server pool, `/etc/hosts`) is built at the first lookup of a name, so a daemon whose
/// targets are all IP literals never loads that code.
#[derive(Clone)]
pub struct Resolver {
    config: ResolverConfig,
    opts: ResolverOpts,
    inner: Arc<OnceLock<TokioResolver>>,
    source: String,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("servers", &self.source)
            .finish()
    }
}

/// Per-server query timeout when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

fn far_future() -> Instant {
    let now = Instant::now();
    // Ten years: "never expires" without risking Instant overflow.
    now.checked_add(Duration::from_secs(10 * 365 * 86_400))
        .unwrap_or(now)
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Resolver {
    /// The system resolver (/etc/resolv.conf, /etc/hosts).
    pub fn system() -> Result<Self, ResolveError> {
        let (config, opts) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            ResolveError::Config {
                what: "system configuration".into(),
                source: std::io::Error::other(e),
            }
        })?;
        Ok(Self::new(config, opts, "system".into()))
    }

    fn new(config: ResolverConfig, opts: ResolverOpts, source: String) -> Self {
        Self {
            config,
            opts,
            inner: Arc::new(OnceLock::new()),
            source,
        }
    }

    /// The hickory resolver, built on first use; clones share it.
    fn inner(&self) -> &TokioResolver {
        self.inner.get_or_init(|| {
            TokioResolver::builder_with_config(
                self.config.clone(),
                TokioConnectionProvider::default(),
            )
            .with_options(self.opts.clone())
            .build()
        })
    }

    /// A resolver that asks only `servers` (UDP, falling back to TCP), with the default timeout.
    pub fn with_servers(servers: &[SocketAddr]) -> Result<Self, ResolveError> {
        Self::with_servers_and_timeout(servers, DEFAULT_TIMEOUT)
    }

    /// Like [`Resolver::with_servers`], with a per-query timeout (two attempts per server).
    pub fn with_servers_and_timeout(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Self, ResolveError> {
        if servers.is_empty() {
            return Err(ResolveError::Config {
                what: "DNS servers".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no DNS server given",
                ),
            });
        }
        let mut group = NameServerConfigGroup::with_capacity(servers.len() * 2);
        for addr in servers {
            group.push(NameServerConfig::new(*addr, Protocol::Udp));
            group.push(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        let config = ResolverConfig::from_parts(None, vec![], group);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        // Only the given servers answer: no /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        let source = servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self::new(config, opts, source))
    }

    /// Resolves `host` for `family`. IP literals (see [`parse_ip_literal`]) are returned as they
    /// are, with no DNS query, if they match the family.
    pub async fn lookup(&self, host: &str, family: Family) -> Result<Resolved, ResolveError> {
        if let Some(literal) = lookup_literal(host, family) {
            return literal;
        }
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ResolveError::NotFound {
                host: host.to_string(),
            });
        }
        let map_err = |e: hickory_resolver::ResolveError| classify(host, family, e);
        let (ips, valid_until): (Vec<IpAddr>, Instant) = match family {
            Family::Ip4 => {
                let l = self.inner().ipv4_lookup(host).await.map_err(map_err)?;
                (l.iter().map(|a| IpAddr::V4(a.0)).collect(), l.valid_until())
            }
            Family::Ip6 => {
                let l = self.inner().ipv6_lookup(host).await.map_err(map_err)?;
                (l.iter().map(|a| IpAddr::V6(a.0)).collect(), l.valid_until())
            }
            // A first; AAAA only when there is no A (hickory's default strategy).
            Family::Auto => {
                let l = self.inner().lookup_ip(host).await.map_err(map_err)?;
                (l.iter().collect(), l.valid_until())
            }
            // Both at once; one family failing is fine while the other answers.
            Family::All => {
                let (v4, v6) = tokio::join!(
                    self.inner().ipv4_lookup(host),
                    self.inner().ipv6_lookup(host)
                );
                let mut ips = Vec::new();
                let mut until: Option<Instant> = None;
                let mut keep = |u: Instant| until = Some(until.map_or(u, |t| t.min(u)));
                let (e4, e6) = (v4.as_ref().err().cloned(), v6.as_ref().err().cloned());
                if let Ok(l) = &v4 {
                    ips.extend(l.iter().map(|a| IpAddr::V4(a.0)));
                    keep(l.valid_until());
                }
                if let Ok(l) = &v6 {
                    ips.extend(l.iter().map(|a| IpAddr::V6(a.0)));
                    keep(l.valid_until());
                }
                match (until, e4.or(e6)) {
                    (Some(u), _) => (ips, u),
                    (None, Some(e)) => return Err(map_err(e)),
                    (None, None) => (ips, far_future()),
                }
            }
        };
        select(host, family, ips, valid_until)
    }
}

impl Resolver {
    /// The name `ip` points back to (its first PTR record, without the final dot), or `None`
    /// when it has none; with how long the answer may be used (the record's TTL, or the
    /// negative TTL of a name without one).
    pub async fn reverse(&self, ip: IpAddr) -> Result<Reversed, ResolveError> {
        let host = ip.to_string();
        match self.inner().reverse_lookup(ip).await {
            Ok(l) => Ok(Reversed {
                name: l
                    .iter()
                    .next()
                    .map(|ptr| ptr.0.to_utf8().trim_end_matches('.').to_owned())
                    .filter(|n| !n.is_empty()),
                valid_until: l.valid_until(),
            }),
            Err(e) => {
                if let Some(ProtoErrorKind::NoRecordsFound { negative_ttl, .. }) =
                    e.proto().map(|p| p.kind())
                {
                    let ttl = Duration::from_secs(u64::from(negative_ttl.unwrap_or(0)));
                    return Ok(Reversed {
                        name: None,
                        valid_until: Instant::now() + ttl,
                    });
                }
                Err(classify(&host, Family::Auto, e))
            }
        }
    }
}

/// The answer of a reverse lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversed {
    /// The name, when the address has a PTR record.
    pub name: Option<String>,
    /// Until when the answer may be used.
    pub valid_until: Instant,
}

fn classify(host: &str, family: Family, e: hickory_resolver::ResolveError) -> ResolveError {
    let host = host.to_string();
    if let Some(proto) = e.proto() {
        match proto.kind() {
            ProtoErrorKind::NoRecordsFound { response_code, .. } => {
                return match (response_code, family) {
                    // The name exists (NOERROR, no data) but not with this family.
                    (ResponseCode::NoError, Family::Ip4 | Family::Ip6) => {
                        ResolveError::NoAddressForFamily { host, family }
                    }
                    _ => ResolveError::NotFound { host },
                };
            }
            ProtoErrorKind::Timeout => return ResolveError::Timeout { host },
            _ => {}
        }
    }
    ResolveError::Io {
        host,
        source: std::io::Error::other(e),
    }
}

/// Applies the family rule to resolved addresses (IPv4-mapped IPv6 counts as IPv4).
fn select(
    host: &str,
    family: Family,
    ips: Vec<IpAddr>,
    valid_until: Instant,
) -> Result<Resolved, ResolveError> {
    let ips: Vec<IpAddr> = ips.into_iter().map(normalize).collect();
    let first = |v6: bool| ips.iter().copied().find(|ip| ip.is_ipv6() == v6);
    let addrs = match family {
        Family::Auto => first(false).or_else(|| first(true)).into_iter().collect(),
        Family::Ip4 => first(false).into_iter().collect(),
        Family::Ip6 => first(true).into_iter().collect(),
        Family::All => {
            let mut all: Vec<IpAddr> = Vec::with_capacity(ips.len());
            for ip in ips
                .iter()
                .filter(|ip| ip.is_ipv4())
                .chain(ips.iter().filter(|ip| ip.is_ipv6()))
            {
                if !all.contains(ip) {
                    all.push(*ip);
                }
            }
            all
        }
    };
    if addrs.is_empty() {
        return Err(match family {
            Family::Ip4 | Family::Ip6 if !ips.is_empty() => ResolveError::NoAddressForFamily {
                host: host.to_string(),
                family,
            },
            _ => ResolveError::NotFound {
                host: host.to_string(),
            },
        });
    }
    Ok(Resolved { addrs, valid_until })
}

/// One `inet_aton` number: `0x` hex, leading-`0` octal, or decimal. No sign, no empty string.
fn aton_part(s: &str) -> Option<u32> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// IPv4 in any spelling `inet_aton(3)` accepts: `a.b.c.d`, `a.b.c` (c: 16 bits), `a.b`
/// (b: 24 bits), `a` (32 bits), each part decimal, octal (`0` prefix) or hex (`0x`).
fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let nums: Vec<u32> = parts.iter().map(|p| aton_part(p)).collect::<Option<_>>()?;
    let (head, last) = nums.split_at(nums.len() - 1);
    if head.iter().any(|&n| n > 0xff) {
        return None;
    }
    let last = last.first().copied()?;
    let last_bits = 8 * (4 - head.len() as u32);
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, &n) in head.iter().enumerate() {
        addr |= n << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(addr | last))
}

/// What [`Resolver::lookup`] answers for `host` without asking DNS: an address literal (or a
/// malformed zone) answered at once, `None` for a name.
pub fn lookup_literal(host: &str, family: Family) -> Option<Result<Resolved, ResolveError>> {
    if host.contains('%')
        && let Err(e) = split_zone(host)
    {
        return Some(Err(ResolveError::Zone(e)));
    }
    parse_ip_literal(host).map(|ip| select(host, family, vec![ip], far_future()))
}

/// Parses an IP literal: IPv4 in every `inet_aton` spelling (`127.1`, `0x7f.0.0.1`,
/// `017700000001`, `2130706433`), IPv6 with or without brackets (`[::1]`). IPv4-mapped IPv6
/// (`::ffff:127.0.0.1`) becomes IPv4. Anything else is `None` (a host name).
pub fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    if s.contains('%') {
        return split_zone(s).ok().flatten().map(|(ip, _)| IpAddr::V6(ip));
    }
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if let Some(v6) = inner {
        return v6
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| normalize(IpAddr::V6(ip)));
    }
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Some(normalize(IpAddr::V6(ip)));
    }
    parse_inet_aton(s).map(IpAddr::V4)
}

/// Splits an IPv6 literal with a zone id (`fe80::1%eth0`, `[fe80::1%2]`) into the address and
/// the interface the zone names (an index is turned into its name, which must exist). `None`
/// when `host` has no `%`. The address carries no scope of its own: callers send through the
/// zone's interface (`SocketOptions::interface`), which is the scope the kernel then uses.
pub fn split_zone(host: &str) -> Result<Option<(Ipv6Addr, String)>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(host);
    let Some((addr, zone)) = bare.split_once('%') else {
        return Ok(None);
    };
    let Ok(ip) = addr.parse::<Ipv6Addr>() else {
        return Err(format!(
            "{host:?}: a zone id (after '%') follows only an IPv6 address, as in fe80::1%eth0"
        ));
    };
    if !ip.is_unicast_link_local() {
        return Err(format!(
            "{host:?}: a zone id is only for link-local IPv6 addresses (fe80::/10); leave it out"
        ));
    }
    if zone.is_empty() {
        return Err(format!(
            "{host:?}: the zone id after '%' is empty; name the interface, as in fe80::1%eth0"
        ));
    }
    if !zone.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Some((ip, zone.to_owned())));
    }
    let name = zone
        .parse::<u32>()
        .ok()
        .filter(|&i| i > 0)
        .and_then(|i| nix::net::if_::if_indextoname(i).ok())
        .and_then(|n| n.into_string().ok())
        // nix 0.30 takes a null from if_indextoname(3) for success, with an empty name.
        .filter(|n| !n.is_empty());
    match name {
        Some(name) => Ok(Some((ip, name))),
        None => Err(format!(
            "{host:?}: no network interface has index {zone} (the zone id names the interface)"
        )),
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
