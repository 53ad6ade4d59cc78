//! The profile file: which behaviour each destination address gets, and the seeded dice that
//! turn a profile into a decision for one echo request.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::packet::IcmpError;
use crate::path::PathSpec;
use crate::tcp::TcpSpec;
use crate::udp::UdpSpec;

/// Per-address RNG streams are dropped (and restarted) past this many, so a scan of the whole
/// range cannot grow memory without bound.
const MAX_RNG_STREAMS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("reading profile file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing profile file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("profile for {key}: {message}")]
    Invalid { key: String, message: String },
}

/// How the network treats packets to one address (and, with `path`, on the way there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Fixed one-way hold time before the answer leaves.
    #[serde(default, with = "humantime_serde_opt")]
    pub delay: Duration,
    /// Spread added to `delay` (see `jitter_distribution`); the result is clamped at zero.
    #[serde(default, with = "humantime_serde_opt")]
    pub jitter: Duration,
    #[serde(default)]
    pub jitter_distribution: JitterDistribution,
    /// Probability (0..=1) that a request is dropped.
    #[serde(default)]
    pub loss: f64,
    /// Extra copies of the answer (0 = just the one).
    #[serde(default)]
    pub duplicate: u32,
    /// Probability that a request gets the `duplicate` extra copies (default 1).
    #[serde(default = "one")]
    pub duplicate_probability: f64,
    /// TTL / hop limit of the answer.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// Answer with destination unreachable and this code instead of a reply.
    #[serde(default)]
    pub unreachable: Option<u8>,
    /// Answer with time exceeded (code 0) instead of a reply.
    #[serde(default)]
    pub time_exceeded: bool,
    /// Never answer.
    #[serde(default)]
    pub blackhole: bool,
    /// Source address of ICMP errors; default the probed address itself.
    #[serde(default)]
    pub from: Option<IpAddr>,
    /// Hops in front of the destination (see `path.rs`).
    #[serde(default)]
    pub path: Option<PathSpec>,
    /// UDP per port; without it every port is unreachable.
    #[serde(default)]
    pub udp: Option<UdpSpec>,
    /// TCP per port; without it every port is refused.
    #[serde(default)]
    pub tcp: Option<TcpSpec>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_distribution: JitterDistribution::Uniform,
            loss: 0.0,
            duplicate: 0,
            duplicate_probability: one(),
            ttl: default_ttl(),
            unreachable: None,
            time_exceeded: false,
            blackhole: false,
            from: None,
            path: None,
            udp: None,
            tcp: None,
        }
    }
}

fn one() -> f64 {
    1.0
}

fn default_ttl() -> u8 {
    64
}

/// Per-port behaviour (the `tcp:` and `udp:` blocks): listed ports, and `default` for the rest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "M: Deserialize<'de> + Default")
)]
pub struct Ports<M> {
    #[serde(default)]
    pub ports: BTreeMap<u16, M>,
    #[serde(default)]
    pub default: M,
}

impl<M: Copy + Default> Ports<M> {
    /// What `port` gets; without the block at all, `M`'s default.
    pub fn mode(spec: Option<&Self>, port: u16) -> M {
        spec.map_or_else(M::default, |s| {
            s.ports.get(&port).copied().unwrap_or(s.default)
        })
    }
}

/// `uniform`: delay ± jitter, flat. `normal`: Gaussian with standard deviation `jitter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JitterDistribution {
    #[default]
    Uniform,
    Normal,
}

pub(crate) mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(serde::de::Error::custom)
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    default: Profile,
    /// Address or prefix (`198.18.1.0/24`) → profile. An exact address wins over a prefix,
    /// a longer prefix over a shorter one.
    #[serde(default)]
    hosts: HashMap<String, Profile>,
}

/// What to do with one echo request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Blackholed,
    Dropped,
    Answer {
        delay: Duration,
        copies: u32,
        ttl: u8,
        error: Option<(IcmpError, Option<IpAddr>)>,
    },
}

/// Loaded profiles plus one deterministic RNG stream per destination address.
#[derive(Debug)]
pub struct Profiles {
    seed: u64,
    default: Profile,
    exact: HashMap<IpAddr, Profile>,
    /// Sorted longest prefix first.
    prefixes: Vec<(IpNet, Profile)>,
    rngs: HashMap<IpAddr, StdRng>,
}

impl Profiles {
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: name.clone(),
            source,
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        );
        let file: ProfileFile = if yaml {
            serde_saphyr::from_str(&text).map_err(|e| ProfileError::Parse {
                path: name.clone(),
                message: e.to_string(),
            })?
        } else {
            serde_json::from_str(&text).map_err(|e| ProfileError::Parse {
                path: name.clone(),
                message: e.to_string(),
            })?
        };
        Self::from_file(file)
    }

    #[cfg(test)]
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let file = serde_json::from_str(text).map_err(|e| ProfileError::Parse {
            path: "<inline>".into(),
            message: e.to_string(),
        })?;
        Self::from_file(file)
    }

    fn from_file(file: ProfileFile) -> Result<Self, ProfileError> {
        validate("default", &file.default)?;
        let mut exact = HashMap::new();
        let mut prefixes = Vec::new();
        for (key, profile) in file.hosts {
            validate(&key, &profile)?;
            if let Ok(addr) = key.parse::<IpAddr>() {
                exact.insert(addr, profile);
            } else if let Ok(net) = key.parse::<IpNet>() {
                prefixes.push((net.trunc(), profile));
            } else {
                return Err(ProfileError::Invalid {
                    key,
                    message: "key is neither an address nor a prefix".into(),
                });
            }
        }
        prefixes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(Self {
            seed: file.seed,
            default: file.default,
            exact,
            prefixes,
            rngs: HashMap::new(),
        })
    }

    /// The seed of every random stream.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The profile that applies to `dst`.
    pub fn lookup(&self, dst: &IpAddr) -> &Profile {
        if let Some(p) = self.exact.get(dst) {
            return p;
        }
        self.prefixes
            .iter()
            .find(|(net, _)| net.contains(dst))
            .map_or(&self.default, |(_, p)| p)
    }

    /// Roll the dice for one request to `dst`. Every call draws the same number of values
    /// whatever the profile says, so a stream stays reproducible when a profile changes.
    pub fn decide(&mut self, dst: &IpAddr) -> Decision {
        if self.rngs.len() >= MAX_RNG_STREAMS && !self.rngs.contains_key(dst) {
            self.rngs.clear();
        }
        let seed = stream_seed(self.seed, dst);
        let rng = self
            .rngs
            .entry(*dst)
            .or_insert_with(|| StdRng::seed_from_u64(seed));
        let (u_loss, u_jitter, u_jitter2, u_dup) = (
            rng.random::<f64>(),
            rng.random::<f64>(),
            rng.random::<f64>(),
            rng.random::<f64>(),
        );
        let p = self.lookup(dst);
        if p.blackhole {
            return Decision::Blackholed;
        }
        if u_loss < p.loss {
            return Decision::Dropped;
        }
        let base = p.delay.as_secs_f64();
        let spread = p.jitter.as_secs_f64();
        let offset = match p.jitter_distribution {
            JitterDistribution::Uniform => (2.0 * u_jitter - 1.0) * spread,
            // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
            JitterDistribution::Normal => {
                let r = (-2.0 * (1.0 - u_jitter).ln()).sqrt();
                r * (2.0 * std::f64::consts::PI * u_jitter2).cos() * spread
            }
        };
        let delay = Duration::from_secs_f64((base + offset).max(0.0));
        let copies = 1 + if u_dup < p.duplicate_probability {
            p.duplicate
        } else {
            0
        };
        let error = match (p.unreachable, p.time_exceeded) {
            (Some(code), _) => Some((IcmpError::Unreachable(code), p.from)),
            (None, true) => Some((IcmpError::TimeExceeded, p.from)),
            (None, false) => None,
        };
        Decision::Answer {
            delay,
            copies,
            ttl: p.ttl,
            error,
        }
    }
}

fn validate(key: &str, p: &Profile) -> Result<(), ProfileError> {
    let bad = |message: &str| {
        Err(ProfileError::Invalid {
            key: key.to_string(),
            message: message.to_string(),
        })
    };
    if !(0.0..=1.0).contains(&p.loss) {
        return bad("loss must be within 0..=1");
    }
    if !(0.0..=1.0).contains(&p.duplicate_probability) {
        return bad("duplicate_probability must be within 0..=1");
    }
    if p.duplicate > 1000 {
        return bad("duplicate must be at most 1000");
    }
    if p.ttl == 0 {
        return bad("ttl must be 1..=255");
    }
    if usize::from(p.blackhole)
        + usize::from(p.time_exceeded)
        + usize::from(p.unreachable.is_some())
        > 1
    {
        return bad("blackhole, unreachable and time_exceeded exclude each other");
    }
    if p.delay + p.jitter > Duration::from_secs(3600) {
        return bad("delay + jitter must stay under one hour");
    }
    if let Some(path) = &p.path {
        path.validate().or_else(|m| bad(&m))?;
    }
    Ok(())
}

/// splitmix64 over the seed and the address bytes: a stable per-address stream seed
/// (std's hasher is not promised stable across releases).
pub(crate) fn stream_seed(seed: u64, addr: &IpAddr) -> u64 {
    let bytes = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let mut x = seed ^ u64::from(addr.is_ipv6());
    for chunk in bytes.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        x = splitmix(x ^ u64::from_be_bytes(w));
    }
    x
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `text` written to the file `name` in `dir`.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn lookup_prefers_exact_then_longest_prefix_then_default() {
        let p = Profiles::from_json(
            r#"{"default":{"ttl":1},"hosts":{
                "198.18.0.0/16":{"ttl":16},"198.18.1.0/24":{"ttl":24},"198.18.1.7":{"ttl":32}}}"#,
        )
        .unwrap();
        assert_eq!(p.lookup(&addr("198.18.1.7")).ttl, 32);
        assert_eq!(p.lookup(&addr("198.18.1.8")).ttl, 24);
        assert_eq!(p.lookup(&addr("198.18.2.8")).ttl, 16);
        assert_eq!(p.lookup(&addr("198.19.2.8")).ttl, 1);
    }

    #[test]
    fn invalid_profiles_are_rejected_with_their_key() {
        for (json, needle) in [
            (
                r#"{"hosts":{"198.18.0.5":{"loss":1.5}}}"#,
                "198.18.0.5: loss",
            ),
            (r#"{"hosts":{"x":{}}}"#, "neither an address"),
            (
                r#"{"default":{"blackhole":true,"unreachable":1}}"#,
                "exclude",
            ),
            (r#"{"default":{"delay":"soon"}}"#, "parsing"),
            (r#"{"default":{"dely":"1ms"}}"#, "unknown field"),
        ] {
            let err = Profiles::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn same_seed_same_decisions_and_loss_rate_is_plausible() {
        let json = r#"{"seed":7,"default":{"loss":0.25,"delay":"10ms","jitter":"2ms"}}"#;
        let (mut a, mut b) = (
            Profiles::from_json(json).unwrap(),
            Profiles::from_json(json).unwrap(),
        );
        let dst = addr("198.18.0.9");
        let da: Vec<_> = (0..2000).map(|_| a.decide(&dst)).collect();
        let db: Vec<_> = (0..2000).map(|_| b.decide(&dst)).collect();
        assert_eq!(da, db);
        let dropped = da.iter().filter(|d| **d == Decision::Dropped).count();
        // 2000 draws at p = 0.25: mean 500, sd 19.4; ±5 sd.
        assert!((403..=597).contains(&dropped), "dropped {dropped}");
        for d in &da {
            if let Decision::Answer { delay, .. } = d {
                assert!(*delay >= Duration::from_millis(8) && *delay <= Duration::from_millis(12));
            }
        }
        let mut c = Profiles::from_json(&json.replace("\"seed\":7", "\"seed\":8")).unwrap();
        let dc: Vec<_> = (0..2000).map(|_| c.decide(&dst)).collect();
        assert_ne!(da, dc, "another seed gives another stream");
    }

    #[test]
    fn duplicates_errors_and_blackhole() {
        let mut p = Profiles::from_json(
            r#"{"hosts":{"198.18.0.2":{"duplicate":2},"198.18.0.3":{"unreachable":1,"from":"198.18.9.9"},
                "2001:db8::3":{"time_exceeded":true},"198.18.0.4":{"blackhole":true}}}"#,
        )
        .unwrap();
        assert!(matches!(
            p.decide(&addr("198.18.0.2")),
            Decision::Answer {
                copies: 3,
                error: None,
                ..
            }
        ));
        assert_eq!(
            p.decide(&addr("198.18.0.3")),
            Decision::Answer {
                delay: Duration::ZERO,
                copies: 1,
                ttl: 64,
                error: Some((IcmpError::Unreachable(1), Some(addr("198.18.9.9"))))
            }
        );
        assert!(matches!(
            p.decide(&addr("2001:db8::3")),
            Decision::Answer {
                error: Some((IcmpError::TimeExceeded, None)),
                ..
            }
        ));
        assert_eq!(p.decide(&addr("198.18.0.4")), Decision::Blackholed);
    }

    #[test]
    fn yaml_and_json_files_load_alike() {
        let dir = tempfile::tempdir().unwrap();
        let yml = file(
            &dir,
            "p.yml",
            "seed: 3\ndefault: {delay: 5ms}\nhosts:\n  \"2001:db8::5\": {ttl: 9, loss: 0.5}\n",
        );
        let json = file(
            &dir,
            "p.json",
            r#"{"seed":3,"default":{"delay":"5ms"},"hosts":{"2001:db8::5":{"ttl":9,"loss":0.5}}}"#,
        );
        let (mut a, mut b) = (
            Profiles::load(&yml).unwrap(),
            Profiles::load(&json).unwrap(),
        );
        assert_eq!(a.lookup(&addr("2001:db8::5")).ttl, 9);
        assert_eq!(
            a.lookup(&addr("198.18.0.1")).delay,
            Duration::from_millis(5)
        );
        let dst = addr("2001:db8::5");
        for _ in 0..50 {
            assert_eq!(a.decide(&dst), b.decide(&dst));
        }
        let err = Profiles::load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn yaml_ports_and_paths_load_as_documented() {
        // The examples of docs/testnet.md, "TCP and UDP" and "Paths".
        let dir = tempfile::tempdir().unwrap();
        let p = Profiles::load(&file(
            &dir,
            "p.yaml",
            r#"
hosts:
  "198.18.0.20":
    delay: 20ms
    duplicate: 1
    tcp: {ports: {80: open, 81: refused}, default: silent}
    udp: {ports: {7: echo, 10: silent}, default: unreachable}
  "198.18.0.9":
    path:
      hops:
        - {addr: 198.18.10.1, delay: 3ms}
        - {addr: 198.18.10.4, icmp_rate_limit: 1}
        - branches:
            - {addr: 198.18.11.5, delay: 1ms}
            - {addr: 198.18.12.5, delay: 4ms}
      change_after: 30s
      then:
        - {addr: 198.18.20.1}
"#,
        ))
        .unwrap();
        let ports = p.lookup(&addr("198.18.0.20"));
        use crate::tcp::{TcpMode, TcpSpec};
        use crate::udp::{UdpMode, UdpSpec};
        assert_eq!(TcpSpec::mode(ports.tcp.as_ref(), 80), TcpMode::Open);
        assert_eq!(TcpSpec::mode(ports.tcp.as_ref(), 99), TcpMode::Silent);
        assert_eq!(UdpSpec::mode(ports.udp.as_ref(), 7), UdpMode::Echo);
        assert_eq!(UdpSpec::mode(ports.udp.as_ref(), 8), UdpMode::Unreachable);
        let path = p.lookup(&addr("198.18.0.9")).path.as_ref().unwrap();
        assert_eq!(path.hops.len(), 3);
        assert_eq!(path.hops[2].branches.len(), 2);
        assert_eq!(path.change_after, Some(Duration::from_secs(30)));
        let err = Profiles::from_json(
            r#"{"hosts":{"198.18.0.9":{"path":{"hops":[{"adr":"198.18.1.1"}]}}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err =
            Profiles::from_json(r#"{"hosts":{"198.18.0.9":{"path":{"hops":[{"loss":0.1}]}}}}"#)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("198.18.0.9: path.hops[0]: a hop needs addr"),
            "{err}"
        );
    }

    #[test]
    fn normal_jitter_has_the_asked_spread() {
        let mut p = Profiles::from_json(
            r#"{"default":{"delay":"100ms","jitter":"10ms","jitter_distribution":"normal"}}"#,
        )
        .unwrap();
        let dst = addr("198.18.0.5");
        let xs: Vec<f64> = (0..4000)
            .filter_map(|_| match p.decide(&dst) {
                Decision::Answer { delay, .. } => Some(delay.as_secs_f64() * 1e3),
                _ => None,
            })
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!((mean - 100.0).abs() < 1.0, "mean {mean}");
        assert!((sd - 10.0).abs() < 1.0, "sd {sd}");
    }
}
