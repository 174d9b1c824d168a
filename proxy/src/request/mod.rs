//! The request core: what happens to every request, whichever engine carries it.
//!
//! [`phases::WeirProxy`] holds the phases, in the order a request meets them:
//! 1. **admit** (`admit`): the request's checks ([`crate::http::hardening`]), the path's
//!    normal form, the route (404 when none), the redirect of a TLS host's plain-HTTP request,
//!    the route's request filters (a `RequestRedirect` answers instead of forwarding), the
//!    route's concurrency limit;
//! 2. **pick** (`pick_endpoint`): the route's pool chooses an endpoint (503 when it has
//!    none), or the session's cookie binds it to one ([`affinity`]), and the request takes
//!    its in-flight slot;
//! 3. **forward** (`forward_headers`): the fields weir sets on the upstream copy
//!    (`X-Forwarded-*`, trace context);
//! 4. **response** (`note_response`, `replaces_response`, `response_fields`): the upstream's
//!    status and `Retry-After` reach the balancer; a status the route retries or its error
//!    backend answers for is discarded, unsent, for another attempt; the fields weir adds to
//!    the response (a new session's cookie) are given to the engine; after a failure
//!    `connect_failed` / `proxy_failed` decide a retry ([`retry`]: the route's conditions,
//!    replayable, attempts, budget);
//! 5. **finish** (`finish_request`): the outcome fed back, slots released, metrics, the
//!    trace's spans, the access-log line ([`access_log`]).
//!
//! Answers weir makes itself (404, 502, 503, 504, redirects) are built in [`answers`]; every
//! timeout of a connection is in [`timeouts`].
//!
//! Must not: read or write sockets, or know which engine or protocol carries the request
//! (requests are read through [`crate::http::request_view::RequestView`]).

pub mod access_log;
pub mod affinity;
pub mod answers;
pub mod auth;
pub mod concurrency;
pub mod copies;
pub mod cors;
pub mod global_limit;
pub mod mirror;
pub mod phases;
pub mod rate_limit;
pub mod retry;
pub mod telemetry;
pub(crate) mod timeouts;
