//! Model ops.
