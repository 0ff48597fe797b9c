//! The committed C header must be exactly what cbindgen generates from the
//! current source (regenerate with `PINNED_WRITE_HEADER=1 cargo build`).

#[test]
fn committed_header_matches_a_fresh_generation() {
    let fresh = include_str!(concat!(env!("OUT_DIR"), "/pinned.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/pinned.h");
    let committed = std::fs::read_to_string(path).expect("include/pinned.h exists");
    assert!(
        committed == fresh,
        "include/pinned.h is stale: run `PINNED_WRITE_HEADER=1 cargo build` and commit it"
    );
}
