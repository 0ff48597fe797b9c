//! Builds the C hosts in `examples/c-host/` with the system C compiler
//! against the static library cargo just built, linked with exactly the
//! flags `pinned link-flags` prints, runs them and checks what they print;
//! also under valgrind and with AddressSanitizer + UBSan.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `target/<profile>/`, found from this test binary's own path
/// (`target/<profile>/deps/c_host-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn link_flags() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_pinned"))
        .arg("link-flags")
        .output()
        .expect("running pinned link-flags");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `libpinned.a`, built for this test's profile. `cargo test` links its
/// tests against the rlib and does not emit the staticlib, so the test asks
/// cargo for it (once per test binary; a no-op when it is up to date).
fn static_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "pinned",
                "--lib",
                "--profile",
                &profile,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap_or_else(|e| panic!("running {cargo} build: {e}"));
        assert!(status.success(), "cargo build of the static library failed");
        let lib = dir.join("libpinned.a");
        assert!(
            lib.exists(),
            "{} is missing: the lib target must build crate-type staticlib",
            lib.display()
        );
        lib
    })
    .clone()
}

/// Compiles `examples/c-host/<source>` into `<name>`; `extra` goes to the compiler.
fn build(source: &str, name: &str, extra: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = static_lib();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .args(extra)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("examples/c-host").join(source))
        .arg(&lib)
        .args(link_flags())
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler '{cc}': {e}"));
    assert!(status.success(), "compiling and linking {source} failed");
    out
}

fn check(run: &Output, last_line: &str) -> String {
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "failed: {}\n{stdout}{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.trim_end().ends_with(last_line), "{stdout}");
    stdout
}

/// Small MLP and request count: the same code paths, quick under valgrind.
const HOST_ARGS: &[&str] = &["100", "64", "128", "32"];

#[test]
fn c_host_serves_an_mlp_from_four_threads() {
    let exe = build("main.c", "c-host", &["-O2"]);
    let run = Command::new(&exe).args(HOST_ARGS).output().unwrap();
    let stdout = check(&run, "c-host ok");
    assert!(
        stdout.contains(&format!("pinned version {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("partition mlp: 64 inputs, 32 outputs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("over 400 requests from 4 threads"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pinned telemetry: 400 requests"),
        "{stdout}"
    );
}

#[test]
fn c_host_serves_minilm_when_the_model_is_there() {
    let Some(dir) = std::env::var_os("PINNED_MINILM_DIR") else {
        eprintln!("SKIPPED: PINNED_MINILM_DIR is not set (.ci/fetch-minilm.sh prints it)");
        return;
    };
    let exe = build("main.c", "c-host-minilm", &["-O2"]);
    let run = Command::new(&exe)
        .arg("minilm")
        .arg(&dir)
        .arg("5")
        .output()
        .unwrap();
    let stdout = check(&run, "c-host ok");
    assert!(
        stdout.contains("partition minilm: 256 inputs, 384 outputs"),
        "{stdout}"
    );
    assert!(stdout.contains("pinned telemetry: 20 requests"), "{stdout}");
}

#[test]
fn misuse_from_c_gets_status_codes() {
    let exe = build("misuse.c", "c-misuse", &[]);
    let run = Command::new(&exe).output().unwrap();
    let stdout = check(&run, "misuse: all ok");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

fn valgrind_available() -> bool {
    let present = Command::new("valgrind").arg("--version").output().is_ok();
    if !present && std::env::var_os("PINNED_REQUIRE_VALGRIND").is_some() {
        panic!("PINNED_REQUIRE_VALGRIND is set but valgrind is not installed");
    }
    if !present {
        eprintln!(
            "SKIPPED: valgrind is not installed (CI installs it and sets PINNED_REQUIRE_VALGRIND)"
        );
    }
    present
}

#[test]
fn c_hosts_run_clean_under_valgrind() {
    if !valgrind_available() {
        return;
    }
    for (source, name, args, last) in [
        ("misuse.c", "c-misuse-vg", &[][..], "misuse: all ok"),
        (
            "main.c",
            "c-host-vg",
            &["20", "16", "32", "8"][..],
            "c-host ok",
        ),
    ] {
        let exe = build(source, name, &[]);
        let run = Command::new("valgrind")
            .args([
                "--error-exitcode=1",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect",
                "--quiet",
            ])
            .arg(&exe)
            .args(args)
            .output()
            .unwrap();
        check(&run, last);
    }
}

#[test]
fn c_hosts_run_clean_with_address_and_ub_sanitizers() {
    for (source, name, args, last) in [
        ("misuse.c", "c-misuse-asan", &[][..], "misuse: all ok"),
        ("main.c", "c-host-asan", HOST_ARGS, "c-host ok"),
    ] {
        let exe = build(
            source,
            name,
            &[
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer",
            ],
        );
        let run = Command::new(&exe)
            .args(args)
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=1")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
            .output()
            .unwrap();
        check(&run, last);
    }
}

#[test]
fn rust_host_example_runs() {
    let exe = profile_dir().join("examples/rust-host");
    assert!(
        exe.exists(),
        "{} is missing: `cargo test` builds examples, but not when one test target is selected with --test",
        exe.display()
    );
    let run = Command::new(&exe).args(HOST_ARGS).output().unwrap();
    let stdout = check(&run, "rust-host ok");
    assert!(
        stdout.contains("over 400 requests from 4 threads"),
        "{stdout}"
    );
}
