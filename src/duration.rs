//! Prometheus-style durations (`500ms`, `1s`, `5m`, `1h30m`), shared by the config, the CLI and the
//! HTTP API, so that one spelling works everywhere.
//!
//! Grammar: one or more `<digits><unit>` parts, units `y w d h m s ms` from largest to smallest, each
//! at most once (as Prometheus' `model.ParseDuration`). A year is 365 days, a week 7 days. No sign, no
//! fraction, no bare number: `0s` is zero.

use std::fmt::Write as _;
use std::time::Duration;

/// Units in the order they must appear, with their length in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const UNIT_LIST: &str = "ms, s, m, h, d, w, y";

/// Why a duration string was rejected. The message names the input and is complete on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration \"\": empty (write e.g. 500ms, 1s, 5m or 1h30m)")]
    Empty,
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    #[error("invalid duration {0:?}: fractions are not allowed (write e.g. 1s500ms for 1.5s)")]
    Fraction(String),
    #[error("invalid duration {0:?}: missing unit (use {UNIT_LIST})")]
    MissingUnit(String),
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use {UNIT_LIST})")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {input:?}: expected a number before {unit:?}")]
    MissingNumber { input: String, unit: String },
    #[error("invalid duration {0:?}: units must go from largest to smallest, each at most once")]
    UnitOrder(String),
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses a Prometheus-style duration such as `500ms`, `1m30s` or `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the next unit allowed: enforces largest-to-smallest, once each.
    let mut next_unit = 0;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &s[digits_start..pos];
        let unit_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let unit = &s[unit_start..pos];
        if unit.starts_with('.') || unit.starts_with(',') {
            return Err(DurationError::Fraction(s.to_owned()));
        }
        if digits.is_empty() {
            return Err(DurationError::MissingNumber {
                input: s.to_owned(),
                unit: unit.to_owned(),
            });
        }
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(s.to_owned()));
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                input: s.to_owned(),
                unit: unit.to_owned(),
            });
        };
        if index < next_unit {
            return Err(DurationError::UnitOrder(s.to_owned()));
        }
        next_unit = index + 1;
        let overflow = || DurationError::Overflow(s.to_owned());
        let n: u64 = digits.parse().map_err(|_| overflow())?;
        let part = n.checked_mul(UNITS[index].1).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the same style, largest units first (`90s` → `1m30s`, zero → `0s`).
///
/// Precision is one millisecond: anything below is dropped, so `parse_duration(&format_duration(d))`
/// gives back `d` for every whole number of milliseconds.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, len) in UNITS {
        let n = ms / len;
        if n > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{n}{name}");
            ms -= n * len;
        }
    }
    out
}

/// Serde helpers: `#[serde(with = "crate::duration::serde_duration")]`.
pub mod serde_duration {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes the duration as a string (`"1m30s"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a duration string; the error message is [`super::DurationError`]'s.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Duration>` (absent or null is `None`).
    pub mod option {
        use super::{format_duration, parse_duration};
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        /// Writes `Some` as a duration string and `None` as null.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format_duration(*d)),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration string.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => parse_duration(&s)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        let cases = [
            ("0s", 0),
            ("500ms", 500),
            ("1s", 1_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            ("1h1m1s1ms", 3_661_001),
            ("90s", 90_000),
        ];
        for (input, ms) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_millis(ms)),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_with_standalone_messages() {
        let cases = [
            (
                "",
                "invalid duration \"\": empty (write e.g. 500ms, 1s, 5m or 1h30m)",
            ),
            (
                "5x",
                "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d, w, y)",
            ),
            (
                "5",
                "invalid duration \"5\": missing unit (use ms, s, m, h, d, w, y)",
            ),
            (
                "-1s",
                "invalid duration \"-1s\": negative durations are not allowed",
            ),
            (
                "1.5s",
                "invalid duration \"1.5s\": fractions are not allowed (write e.g. 1s500ms for 1.5s)",
            ),
            (
                "ms",
                "invalid duration \"ms\": expected a number before \"ms\"",
            ),
            (
                "1s1h",
                "invalid duration \"1s1h\": units must go from largest to smallest, each at most once",
            ),
            (
                "1s1s",
                "invalid duration \"1s1s\": units must go from largest to smallest, each at most once",
            ),
            (
                "1 s",
                "invalid duration \"1 s\": unknown unit \" s\" (use ms, s, m, h, d, w, y)",
            ),
            (
                "99999999999999999999s",
                "invalid duration \"99999999999999999999s\": too large",
            ),
            ("999999999y", "invalid duration \"999999999y\": too large"),
        ];
        for (input, message) in cases {
            let err = parse_duration(input).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(message), "{input}");
        }
    }

    #[test]
    fn formats_largest_units_first() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(90_000)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400 * 8)), "1w1d");
        assert_eq!(format_duration(Duration::from_micros(1_999)), "1ms");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..(100 * 365 * 86_400_000)) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
