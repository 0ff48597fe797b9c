//! pinned-runtime
