//! The path options as a front received them, and the one function that checks them with the
//! rules every front shares ([`crate::probe::rules`]).

use super::{MAX_FLOWS, PathOptions};
use crate::probe::RequestError;
use crate::probe::request::{at, number};
use crate::probe::rules;

/// Path options as texts; `None` takes the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawPath {
    /// `first_ttl`.
    pub first_ttl: Option<String>,
    /// `max_ttl`.
    pub max_ttl: Option<String>,
    /// `flows`.
    pub flows: Option<String>,
    /// `protocol`.
    pub protocol: Option<String>,
    /// `pace`, a duration (`10ms`).
    pub pace: Option<String>,
}

/// Checks the path options and fills in the defaults (`first_ttl` 1, `max_ttl` 30, one flow,
/// ICMP; `protocol` is `icmp` or `udp`). `max_ttl` is checked before `first_ttl`, which must not be above it.
pub fn validate_path(raw: &RawPath) -> Result<PathOptions, RequestError> {
    let d = PathOptions::default();
    let max_ttl = match number("max_ttl", &raw.max_ttl)? {
        Some(n) => rules::max_ttl(n).map_err(at("max_ttl"))?,
        None => d.max_ttl,
    };
    let first_ttl = match number("first_ttl", &raw.first_ttl)? {
        Some(n) => rules::first_ttl(n, max_ttl).map_err(at("first_ttl"))?,
        None if d.first_ttl > max_ttl => max_ttl,
        None => d.first_ttl,
    };
    let flows = match number("flows", &raw.flows)? {
        Some(n) => rules::flows(n, MAX_FLOWS).map_err(at("flows"))?,
        None => d.flows,
    };
    let protocol = match raw.protocol.as_deref() {
        Some(p) => rules::path_protocol(p).map_err(at("protocol"))?,
        None => d.protocol,
    };
    let pace = match raw.pace.as_deref() {
        Some(t) => rules::parse_duration_of("pace", t, false)
            .and_then(rules::path_pace)
            .map_err(at("pace"))?,
        None => d.pace,
    };
    Ok(PathOptions {
        first_ttl,
        max_ttl,
        flows,
        protocol,
        pace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawPath {
        let mut r = RawPath::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "first_ttl" => r.first_ttl = v,
                "max_ttl" => r.max_ttl = v,
                "flows" => r.flows = v,
                "protocol" => r.protocol = v,
                "pace" => r.pace = v,
                other => panic!("no field {other}"),
            }
        }
        r
    }

    #[test]
    fn refusals_name_the_field_and_the_value() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("max_ttl", "0")],
                "max_ttl",
                "max_ttl must be between 1 and 255, got 0",
            ),
            (
                &[("max_ttl", "256")],
                "max_ttl",
                "max_ttl must be between 1 and 255, got 256",
            ),
            (
                &[("first_ttl", "9"), ("max_ttl", "5")],
                "first_ttl",
                "first_ttl 9 is above max_ttl 5",
            ),
            (
                &[("flows", "0")],
                "flows",
                "flows must be between 1 and 16, got 0",
            ),
            (
                &[("flows", "17")],
                "flows",
                "flows must be between 1 and 16, got 17",
            ),
            (
                &[("protocol", "tcp")],
                "protocol",
                "unknown protocol \"tcp\" (use icmp or udp)",
            ),
            (
                &[("pace", "0s")],
                "pace",
                "pace 0s is below the minimum of 1ms",
            ),
            (
                &[("pace", "2s")],
                "pace",
                "pace 2s is above the maximum of 1s",
            ),
            (
                &[("pace", "soon")],
                "pace",
                "pace: invalid duration \"soon\": expected a number before \"soon\"",
            ),
        ];
        for (pairs, field, message) in cases {
            let e = validate_path(&raw(pairs)).expect_err("refused");
            assert_eq!(
                (e.field, e.message.as_str()),
                (*field, *message),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn defaults_and_a_low_max_ttl() {
        assert_eq!(validate_path(&raw(&[])), Ok(PathOptions::default()));
        let o = validate_path(&raw(&[("max_ttl", "3"), ("flows", "4"), ("pace", "25ms")]))
            .expect("valid");
        assert_eq!(
            (o.first_ttl, o.max_ttl, o.flows, o.pace),
            (1, 3, 4, std::time::Duration::from_millis(25))
        );
    }

    #[test]
    fn protocols() {
        use super::super::PathProtocol;
        for (text, want) in [
            ("icmp", PathProtocol::Icmp),
            ("udp", PathProtocol::Udp),
            (" udp ", PathProtocol::Udp),
        ] {
            let o = validate_path(&raw(&[("protocol", text)])).expect("valid");
            assert_eq!(o.protocol, want, "{text:?}");
        }
    }
}
