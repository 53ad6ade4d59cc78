//! Records the VCS revision and the compiler version for `pingscope_build_info`.

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
}
