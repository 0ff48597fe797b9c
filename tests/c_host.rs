//! Builds `examples/c-host/main.c` with the system C compiler against the
//! static library cargo just built, links it with the documented flags, runs
//! it and checks what it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The link line documented in the README and in `include/pinned.h`.
pub const SYSTEM_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// `target/<profile>/`, found from this test binary's own path
/// (`target/<profile>/deps/c_host-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

#[test]
fn c_host_links_against_the_static_library_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = profile_dir().join("libpinned.a");
    assert!(
        lib.exists(),
        "{} is missing: the lib target must build crate-type staticlib",
        lib.display()
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-host");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("examples/c-host/main.c"))
        .arg(&lib)
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler '{cc}': {e}"));
    assert!(status.success(), "compiling and linking the C host failed");

    let run = Command::new(&out).output().expect("running the C host");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "c-host failed: {}\n{stdout}{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains(&format!("pinned version {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("null buffer refused with status 1"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("c-host ok"), "{stdout}");
}
