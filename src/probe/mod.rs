//! One probe path for every front: the CLI, `/probe`, sessions and the monitors describe what to
//! probe in one request type, checked by one function, and run it through one runner.
//!
//! | file | owns |
//! |---|---|
//! | [`rules`] | the limits (payload per family, timeout, interval, count) and one rule per value, each with its message |
//! | [`request`] | [`ProbeKind`] (the seam for new kinds), [`ProbeRequest`], [`RawRequest`] and [`validate`] |
//! | [`ticks`] | the drift-free cadence shared by the runner and the monitors |
//! | [`run`](mod@run) | the runner of a bounded request to one address: samples as they happen, a tally, a [`summary`] |
//!
//! A new kind is added to [`ProbeKind`], [`request::spec`] and the engine, and every front has it.

pub mod path;
pub mod request;
pub mod rules;
pub mod run;
pub mod ticks;

use std::net::IpAddr;

use tokio::time::Instant;

pub use request::{Defaults, Limits, ProbeKind, ProbeRequest, RawRequest, RequestError, validate};
pub use run::{LINGER, outcome, run, summary};
pub use ticks::Ticks;

use crate::resolve::Resolver;

/// The first address of the request's target in its family, looked up by `deadline`; the error
/// says why there is none.
pub async fn resolve_one(
    resolver: &Resolver,
    request: &ProbeRequest,
    deadline: Instant,
) -> Result<IpAddr, String> {
    match tokio::time::timeout_at(deadline, resolver.lookup(&request.target, request.family)).await
    {
        Ok(Ok(r)) => r
            .addrs
            .first()
            .copied()
            .ok_or_else(|| "no address".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("lookup timed out".to_owned()),
    }
}
