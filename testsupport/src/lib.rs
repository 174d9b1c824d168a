//! weir-testsupport: the pieces weir's tests, quickstart and benchmarks run against.
//!
//! Owns the echo upstream ([`echo`], binary `weir-echo`) and helpers that start real
//! processes on 127.0.0.1 and wait for them ([`process`]), and the fake Kubernetes API
//! server ([`fakeapi`]), and throwaway certificates ([`tls`]).
//!
//! Must not: be a dependency of the shipped crates (only of tests and tools).

pub mod echo;
#[allow(clippy::expect_used)]
pub mod fakeapi;
// Test helpers fail the test that called them by panicking, with a message saying why.
#[allow(clippy::panic, clippy::expect_used)]
pub mod process;
pub mod tls;
