//! pinned-bench
