//! Routes as the data path reads them: the host and path [`router`] with each route's
//! request [`conditions`], the live state a
//! reload swaps in whole ([`routing::LiveRouting`]), and the configuration pipeline that
//! turns each snapshot of the source into it ([`config`]).
//!
//! Must not: serve traffic, or translate Kubernetes objects (weir-discovery does).

pub mod conditions;
pub mod config;
pub mod router;
pub mod routing;
