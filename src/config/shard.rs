//! `--shard I/N`: keep only the targets whose name hashes to shard I of N, so N instances split one
//! target list between them without talking to each other.
//!
//! Shards count from 0 (`0/3`, `1/3`, `2/3`), as the `modulus` values of Prometheus' `hashmod`
//! relabelling do. The hash is FNV-1a 64 of the target name's UTF-8 bytes, written out here so it
//! never changes with a dependency: the split is the same across restarts, versions and platforms.
//! It is not Prometheus' hashmod (MD5); do not mix the two on one list.

use std::fmt;
use std::str::FromStr;

/// One shard of a target list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    /// 0-based index, below `count`.
    pub index: u64,
    /// Number of shards, at least 1.
    pub count: u64,
}

/// Why a `--shard` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("invalid shard {0:?}: expected I/N with shards counted from 0, e.g. 0/3, 1/3 or 2/3")]
    Syntax(String),
    #[error("invalid shard {0:?}: the shard count must be at least 1")]
    ZeroCount(String),
    #[error(
        "invalid shard {input:?}: index {index} is out of range for {count} shards (shards are counted from 0: 0/{count} to {last}/{count})",
        last = .count.saturating_sub(1)
    )]
    OutOfRange {
        input: String,
        index: u64,
        count: u64,
    },
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(s.to_owned());
        let (i, n) = s.split_once('/').ok_or_else(syntax)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(i) || !digits(n) {
            return Err(syntax());
        }
        let index: u64 = i.parse().map_err(|_| syntax())?;
        let count: u64 = n.parse().map_err(|_| syntax())?;
        if count == 0 {
            return Err(ShardError::ZeroCount(s.to_owned()));
        }
        Self::new(index, count).ok_or_else(|| ShardError::OutOfRange {
            input: s.to_owned(),
            index,
            count,
        })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Shard `index` of `count`; `None` unless `index` is below `count`.
    pub fn new(index: u64, count: u64) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Does this shard monitor the target called `target_name`?
    pub fn keeps(&self, target_name: &str) -> bool {
        fnv1a64(target_name.as_bytes()) % self.count == self.index
    }
}

/// FNV-1a, 64-bit (offset basis and prime from the FNV specification).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_published_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
