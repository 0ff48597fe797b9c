//! The measurement harness behind `pinned run`, `pinned sweep` and
//! `pinned compare`: scenarios modelled on MLPerf LoadGen, one parameter
//! varied at a time, every run recorded with its machine and configuration.
//!
//! Runtime-independent parts: [`stats`], [`record`], [`fingerprint`],
//! [`cpu_usage`], [`config`], [`loadgen`], [`sweep`], [`compare`], [`plot`],
//! [`table`]. The driver that runs a scenario on pinned-runtime partitions
//! is [`scenario`].

pub mod commands;
pub mod compare;
pub mod config;
pub mod cpu_usage;
pub mod fingerprint;
pub mod loadgen;
pub mod numa_maps;
pub mod plot;
pub mod record;
pub mod scenario;
pub mod stats;
pub mod sweep;
pub mod table;
