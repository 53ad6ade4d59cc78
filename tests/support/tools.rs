//! Test tools from the package registries, installed on first use under `target/` and kept
//! there: a PyPI package in a venv ([`pypi_program`]) and an npm package ([`npm_package`]).
//!
//! An install holds an exclusive lock on a file beside it, so tests running at once share one
//! install, and writes a stamp naming what it installed only when it succeeded: a half-done
//! install or a changed pin is installed again. Err says why a tool cannot be had; the caller
//! passes it to [`super::require`], which fails under `CI`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the tools live: `target/` of this package.
fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `install` in `dir` unless its stamp already names `what`; under the dir's lock.
fn installed(
    dir: &Path,
    what: &str,
    install: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let lock_path = dir.with_extension("lock");
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == what) {
        return Ok(());
    }
    install()?;
    std::fs::write(&stamp, what).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// The executable `program` of a venv `target/VENV` holding `requirements` (pip specifiers),
/// installing them from PyPI if needed.
pub fn pypi_program(venv: &str, requirements: &[&str], program: &str) -> Result<PathBuf, String> {
    let dir = tools_dir().join(venv);
    installed(&dir, &requirements.join("\n"), || {
        if !dir.join("bin/pip").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
        }
        run(Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(requirements))
    })?;
    let exe = dir.join("bin").join(program);
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!(
            "pip installed no {program} executable into {}",
            dir.display()
        ))
    }
}

/// The `node_modules` folder of `target/DIR` holding the npm `package` (`name@version`),
/// installing it from the npm registry if needed.
pub fn npm_package(dir: &str, package: &str) -> Result<PathBuf, String> {
    let dir = tools_dir().join(dir);
    installed(&dir, package, || {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("package.json"), "{\"private\": true}\n")
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        run(Command::new("npm")
            .current_dir(&dir)
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--save-exact",
            ])
            .arg(package))
    })?;
    Ok(dir.join("node_modules"))
}
