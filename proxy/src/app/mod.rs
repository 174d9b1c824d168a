//! The process around the data path: the command line, logging, the metrics registry, the
//! admin listener, signals and shutdown, supervision of background work, the allocator's
//! accounting.
//!
//! Must not: carry requests of the proxy listeners.

pub mod admin;
pub mod allocator;
pub mod cli;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod shutdown;
pub mod supervise;
