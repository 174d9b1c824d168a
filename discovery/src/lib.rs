//! weir-discovery: where routes come from.
//!
//! Owns: the [`RoutingSnapshot`] (an immutable description of every route and backend),
//! the pure translation from Kubernetes objects to a snapshot ([`translate()`]), the parsing
//! of YAML manifests into those objects ([`objects`]), and the manifests source that
//! watches files on disk ([`manifests::ManifestSource`]), and the Kubernetes watch source
//! ([`kubernetes::run`]) that feeds the same translation.
//!
//! Must not: serve traffic, pick endpoints, or keep live per-request state. Translation is
//! a pure function of its inputs; all I/O lives in the source modules.

pub mod annotations;
pub mod auth;
pub mod cidr;
pub mod endpoints;
pub mod gateway;
pub mod htpasswd;
pub mod kubernetes;
pub mod manifests;
pub mod migrate;
pub mod nginx;
pub mod objects;
pub mod snapshot;
pub mod status;
pub mod tls;
mod translate;
mod validate;

pub use annotations::{BackendProtocol, HashKey, RoutePolicy};
pub use cidr::Cidr;
pub use objects::ClusterObjects;
pub use snapshot::{
    AffinityCookie, AffinityMode, Authentication, BackendKey, BackendSnapshot, BasicAuth, Canary,
    CanaryHeader, CanaryRule, Cors, ErrorPages, ExternalAuth, GlobalRateLimit, HeaderModifier,
    HealthCheck, HostMatch, ObjectRef, OverriddenAnnotation, PathMatch, PathRewrite, RateLimit,
    Redirect, RedirectParts, RedirectTo, Rejection, RequestConditions, RequestMirror, RetryOn,
    RouteFilter, RouteSnapshot, RoutingSnapshot, SameSite, SessionAffinity, SourceAccess,
    StringMatch, UnsupportedAnnotation, UrlRewrite, ValueMatch, WeightedBackend,
};
pub use translate::{translate, TranslateOptions, CONTROLLER_NAME};
