//! Records the build's provenance for the harness's machine fingerprint:
//! git revision (and whether the tree was dirty), profile, optimisation level,
//! target and compiler. Without git (a source tarball) the revision is
//! "unknown", never a build failure.

use std::env;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    // A new commit moves HEAD's reflog; rebuild then, not on every file edit.
    println!("cargo:rerun-if-changed=../.git/logs/HEAD");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| if s.is_empty() { "clean" } else { "dirty" })
        .unwrap_or("unknown");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let var = |k: &str| env::var(k).unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=PINNED_GIT_REVISION={revision}");
    println!("cargo:rustc-env=PINNED_GIT_TREE={dirty}");
    println!("cargo:rustc-env=PINNED_BUILD_PROFILE={}", var("PROFILE"));
    println!(
        "cargo:rustc-env=PINNED_BUILD_OPT_LEVEL={}",
        var("OPT_LEVEL")
    );
    println!("cargo:rustc-env=PINNED_BUILD_TARGET={}", var("TARGET"));
    println!(
        "cargo:rustc-env=PINNED_BUILD_TARGET_FEATURES={}",
        var("CARGO_CFG_TARGET_FEATURE")
    );
    println!(
        "cargo:rustc-env=PINNED_BUILD_DEBUG_ASSERTIONS={}",
        var("CARGO_CFG_DEBUG_ASSERTIONS").ne("unknown")
    );
    println!("cargo:rustc-env=PINNED_RUSTC_VERSION={rustc_version}");
}
