//! Gateway API: its objects ([`objects`]), their translation onto weir's route model
//! ([`translate`]), beside the Ingresses', the policies attached to Services ([`policy`]),
//! and the status they should have ([`status`]).
//!
//! Must not: do I/O (the objects come from the same sources as Ingresses; status is written
//! by `crate::status`).

pub mod objects;
pub mod policy;
pub mod status;
pub mod translate;
pub mod values;

/// The `controllerName` of the GatewayClasses weir serves (by default).
pub const CONTROLLER_NAME: &str = "weir.dev/gateway-controller";
