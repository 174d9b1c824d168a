//! weir-http2: the server side of HTTP/2's wire protocol, without I/O.
//!
//! Owns: the frame layer of RFC 9113 ([`frame`]) and header compression of RFC 7541
//! ([`hpack`]): turning bytes a client sent into frames and header fields, and the frames
//! and header blocks weir answers with into bytes.
//!
//! Why weir has its own: under h2c load the `h2` crate, with the `http` header maps it
//! builds, was about 25,000 of the 43,800 instructions weir spent on a request (callgrind,
//! docs/benchmarks.md, eleventh session), against HAProxy's 28,600 for the whole request.
//! A codec that decodes into the fields a proxy relays, and encodes straight into the
//! write buffer, does not have to build those maps.
//!
//! Must not: do I/O, read clocks, spawn, or know about routes and upstreams. Everything
//! here is a pure function of its input, so it is unit-tested and fuzzed byte by byte.

pub mod conn;
pub mod frame;
pub mod hpack;
