//! The link recipe for `libpinned.a`: the system libraries Rust's standard
//! library needs on this target, and a pkg-config file.

/// What `rustc --print native-static-libs` reports for a staticlib on
/// x86_64-unknown-linux-gnu; `tests/c_host.rs` links the C hosts with
/// exactly this list, so a missing library fails the test.
pub const NATIVE_STATIC_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

/// A `pinned.pc` for pkg-config, for a tree with `include/pinned.h` and
/// `libpinned.a` under `prefix` (`prefix/include`, `prefix/lib`).
pub fn pkg_config(prefix: &str) -> String {
    format!(
        "prefix={prefix}\n\
         includedir=${{prefix}}/include\n\
         libdir=${{prefix}}/lib\n\
         \n\
         Name: pinned\n\
         Description: CPU inference runtime that owns placement (static library)\n\
         Version: {version}\n\
         Cflags: -I${{includedir}}\n\
         Libs: ${{libdir}}/libpinned.a {libs}\n",
        version = env!("CARGO_PKG_VERSION"),
        libs = NATIVE_STATIC_LIBS,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkg_config_names_the_library_and_flags() {
        let pc = super::pkg_config("/opt/pinned");
        assert!(pc.contains("Libs: ${libdir}/libpinned.a -lgcc_s"));
        assert!(pc.contains("Cflags: -I${includedir}"));
        assert!(pc.starts_with("prefix=/opt/pinned\n"));
    }
}
