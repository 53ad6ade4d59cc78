//! `--shard auto`: the shard index from a StatefulSet pod's hostname (`NAME-ORDINAL`, the
//! convention kube-state-metrics shards by), the count from `--shard.count` or
//! [`SHARD_COUNT_ENV`]. Pure: the caller reads the hostname and the environment.

use super::shard::Shard;

/// The environment variable that gives the shard count to `--shard auto` (the StatefulSet's
/// `replicas`, which the downward API cannot pass).
pub const SHARD_COUNT_ENV: &str = "PINGSCOPE_SHARD_COUNT";

/// The `--shard` value that asks for the index from the hostname.
pub const SHARD_AUTO: &str = "auto";

/// Why `--shard auto` could not name a shard.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AutoShardError {
    #[error(
        "--shard auto needs the shard count (the StatefulSet's replicas): set --shard.count N or {SHARD_COUNT_ENV}=N"
    )]
    MissingCount,
    #[error("invalid shard count {0:?}: expected a whole number, at least 1")]
    BadCount(String),
    #[error(
        "--shard auto takes the shard index from the hostname, which must end in -N as a StatefulSet pod's does (pingscope-0, pingscope-1, ...); the hostname is {0:?}"
    )]
    BadHostname(String),
    #[error(
        "--shard auto: the hostname {hostname:?} names shard {index}, out of range for {count} shards (pods -0 to -{last}); is --shard.count (or {SHARD_COUNT_ENV}) the StatefulSet's replicas?",
        last = .count.saturating_sub(1)
    )]
    OutOfRange {
        hostname: String,
        index: u64,
        count: u64,
    },
    #[error(
        "--shard.count {count} does not match --shard {shard}; --shard.count is for --shard auto"
    )]
    CountMismatch { shard: Shard, count: u64 },
    #[error("--shard auto cannot read the hostname ({0}); set HOSTNAME")]
    NoHostname(String),
}

/// Parses a shard count given as text (a flag or [`SHARD_COUNT_ENV`]).
pub fn parse_shard_count(s: &str) -> Result<u64, AutoShardError> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(n) if n > 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(AutoShardError::BadCount(s.to_owned())),
    }
}

/// The shard of the pod called `hostname` (its first DNS label, `NAME-N`) among `count`.
pub fn shard_from_hostname(hostname: &str, count: u64) -> Result<Shard, AutoShardError> {
    let bad = || AutoShardError::BadHostname(hostname.to_owned());
    let label = hostname.split('.').next().unwrap_or_default();
    let (name, ordinal) = label.rsplit_once('-').ok_or_else(bad)?;
    if name.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let index: u64 = ordinal.parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(AutoShardError::BadCount("0".to_owned()));
    }
    Shard::new(index, count).ok_or_else(|| AutoShardError::OutOfRange {
        hostname: hostname.to_owned(),
        index,
        count,
    })
}

/// The shard that `--shard` (`I/N` or `auto`) and a count from `--shard.count` or the
/// environment ask for. `hostname` is asked for only with `auto`.
pub fn resolve_shard(
    shard: Option<&str>,
    count: Option<&str>,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<Option<Shard>, String> {
    let count = count
        .map(parse_shard_count)
        .transpose()
        .map_err(|e| e.to_string())?;
    match shard {
        None => Ok(None),
        Some(SHARD_AUTO) => {
            let count = count.ok_or_else(|| AutoShardError::MissingCount.to_string())?;
            let hostname = hostname().map_err(|e| AutoShardError::NoHostname(e).to_string())?;
            shard_from_hostname(hostname.trim(), count)
                .map(Some)
                .map_err(|e| e.to_string())
        }
        Some(s) => {
            let shard = s.parse::<Shard>().map_err(|e| e.to_string())?;
            match count {
                Some(count) if count != shard.count => {
                    Err(AutoShardError::CountMismatch { shard, count }.to_string())
                }
                _ => Ok(Some(shard)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statefulset_hostnames_name_their_shard() {
        assert_eq!(
            shard_from_hostname("pingscope-2", 3),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            shard_from_hostname("ping-scope-10.pingscope.monitoring.svc", 11),
            Ok(Shard {
                index: 10,
                count: 11
            })
        );
        for bad in [
            "pingscope",
            "pingscope-",
            "-1",
            "pingscope-a1",
            "pingscope-+1",
            "",
        ] {
            assert_eq!(
                shard_from_hostname(bad, 3),
                Err(AutoShardError::BadHostname(bad.to_owned()))
            );
        }
    }
}
