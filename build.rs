//! Records the VCS revision and the compiler version for `pingscope_build_info`, and packs the
//! binaries' relative relocations on glibc.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let revision = std::env::var("PINGSCOPE_REVISION")
        .ok()
        .or_else(|| run("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = run(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PINGSCOPE_REVISION={revision}");
    println!("cargo:rustc-env=PINGSCOPE_RUSTC_VERSION={rustc_version}");
    println!("cargo:rerun-if-env-changed=PINGSCOPE_REVISION");
    // Checkouts and branch switches; a commit on the same branch keeps the old revision until
    // the next clean build, which is what release builds from CI are.
    println!("cargo:rerun-if-changed=.git/HEAD");
    // Packed relative relocations (DT_RELR): the loader reads a few kilobytes instead of the
    // ~270 kB `.rela.dyn` a position-independent Rust binary carries, which is startup work and
    // resident memory for as long as the process runs. GNU ld ≥ 2.38 packs them only when the
    // C library supports it (glibc ≥ 2.36, which the binary then requires, as Debian 12 has);
    // an older linker ignores the option with a warning.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
