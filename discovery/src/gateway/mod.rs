//! Gateway API: its objects ([`objects`]) and their translation onto weir's route model
//! ([`translate`]), beside the Ingresses'.
//!
//! Must not: do I/O (the objects come from the same sources as Ingresses).

pub mod objects;
pub mod translate;

/// The `controllerName` of the GatewayClasses weir serves (by default).
pub const CONTROLLER_NAME: &str = "weir.dev/gateway-controller";
