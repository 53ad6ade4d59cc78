//! `--shard auto` (the shard index from a StatefulSet pod's hostname): the pods pingscope-0..2
//! of a 3-replica StatefulSet split a 1,000-target list with no overlap or gap, and every way
//! to get it wrong is refused with its exact message and exit status 64 before anything starts.
//! (tests/serve_shards.rs runs the same split with three live daemons.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::process::Command;

use pingscope::config::Shard;
use pingscope::config::shard_auto::{SHARD_COUNT_ENV, resolve_shard};

fn auto(hostname: &str, count: Option<&str>) -> Result<Option<Shard>, String> {
    resolve_shard(Some("auto"), count, || Ok(hostname.to_owned()))
}

#[test]
fn pods_0_to_2_of_three_cover_a_thousand_targets_without_overlap_or_gap() {
    let shards: Vec<Shard> = (0..3)
        .map(|i| auto(&format!("pingscope-{i}"), Some("3")).unwrap().unwrap())
        .collect();
    assert_eq!(
        shards,
        (0..3)
            .map(|index| Shard { index, count: 3 })
            .collect::<Vec<_>>()
    );
    let sizes = support::shard_split(&shards, (0..1000).map(|n| format!("t{n:04}")));
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    assert!(sizes.iter().all(|&s| (200..=470).contains(&s)), "{sizes:?}");
}

#[test]
fn bad_hostnames_counts_and_combinations_are_exact_errors() {
    let bad_host = |h: &str| {
        format!(
            "--shard auto takes the shard index from the hostname, which must end in -N as a StatefulSet pod's does (pingscope-0, pingscope-1, ...); the hostname is {h:?}"
        )
    };
    for h in ["pingscope", "pingscope-x", "pingscope-", "-0", "web-1a"] {
        assert_eq!(auto(h, Some("3")), Err(bad_host(h)), "{h}");
    }
    assert_eq!(
        auto("pingscope-3", Some("3")),
        Err("--shard auto: the hostname \"pingscope-3\" names shard 3, out of range for 3 shards (pods -0 to -2); is --shard.count (or PINGSCOPE_SHARD_COUNT) the StatefulSet's replicas?".into())
    );
    assert_eq!(
        auto("pingscope-0", None),
        Err("--shard auto needs the shard count (the StatefulSet's replicas): set --shard.count N or PINGSCOPE_SHARD_COUNT=N".into())
    );
    for c in ["0", "-1", "three", ""] {
        assert_eq!(
            auto("pingscope-0", Some(c)),
            Err(format!(
                "invalid shard count {c:?}: expected a whole number, at least 1"
            ))
        );
    }
    assert_eq!(
        resolve_shard(Some("1/3"), Some("4"), || unreachable!()),
        Err("--shard.count 4 does not match --shard 1/3; --shard.count is for --shard auto".into())
    );
    assert_eq!(
        resolve_shard(Some("1/3"), Some("3"), || unreachable!()),
        Ok(Some(Shard { index: 1, count: 3 }))
    );
    assert_eq!(resolve_shard(None, Some("3"), || unreachable!()), Ok(None));
    assert_eq!(
        auto(
            "pingscope-1.pingscope.monitoring.svc.cluster.local",
            Some("2")
        ),
        Ok(Some(Shard { index: 1, count: 2 }))
    );
}

/// `pingscope serve` with these arguments and environment: (exit status, stderr).
fn serve(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pingscope"));
    cmd.arg("serve")
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(args)
        .env_remove(SHARD_COUNT_ENV)
        .env_remove("HOSTNAME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running pingscope serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_daemon_refuses_a_bad_auto_shard_with_status_64() {
    // (flags, environment, the message after `pingscope: invalid --shard: `, whether that is
    // the whole message or a part of it).
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, bool);
    let cases: [Case; 4] = [
        (
            &["--shard", "auto"],
            &[("HOSTNAME", "pingscope-0")],
            "--shard auto needs the shard count (the StatefulSet's replicas): set --shard.count N or PINGSCOPE_SHARD_COUNT=N",
            true,
        ),
        (
            &["--shard", "auto", "--shard.count", "3"],
            &[("HOSTNAME", "pingscope")],
            "--shard auto takes the shard index from the hostname, which must end in -N as a StatefulSet pod's does (pingscope-0, pingscope-1, ...); the hostname is \"pingscope\"",
            true,
        ),
        // The count from the environment, as the StatefulSet sets it.
        (
            &["--shard", "auto"],
            &[("HOSTNAME", "pingscope-5"), (SHARD_COUNT_ENV, "3")],
            "the hostname \"pingscope-5\" names shard 5, out of range for 3 shards",
            false,
        ),
        (
            &["--shard", "auto"],
            &[("HOSTNAME", "pingscope-0"), (SHARD_COUNT_ENV, "0")],
            "invalid shard count \"0\": expected a whole number, at least 1",
            true,
        ),
    ];
    for (flags, env, says, whole) in cases {
        let (code, err) = serve(flags, env);
        assert_eq!(code, Some(64), "{flags:?} {env:?}: {err}");
        if whole {
            assert_eq!(
                err,
                format!("pingscope: invalid --shard: {says}\n"),
                "{flags:?} {env:?}"
            );
        } else {
            assert!(err.contains(says), "{flags:?} {env:?}: {err}");
        }
    }
}
