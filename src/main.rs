//! The `pinned` command line.

fn main() {
    std::process::exit(pinned::cli::main());
}
