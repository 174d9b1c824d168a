//! When a failed attempt may be sent again, from Pingora's errors. Each route's
//! [`RetryBudget`] (weir-balancer's, shared with weir-client) bounds how many retries it has in
//! flight (20 % of its active requests, at least 3; docs/configuration.md), so that retries
//! cannot multiply load on a struggling backend. Retries after a connect that sent nothing
//! ([`sent_nothing`]) are not counted (`WeirProxy::may_retry`).

use pingora::prelude::{Error, ErrorSource, ErrorType};
use pingora::RetryType;
pub use weir_balancer::retry_budget::{BudgetGuard, RetryBudget};

/// Whether a request may be sent again after a failed attempt: it may be repeated
/// (`repeatable`: its method is idempotent, RFC 9110 §9.2.2, or its route retries any
/// method) and its whole body is still at hand (`body_at_hand`).
pub(crate) fn replayable(repeatable: bool, body_at_hand: bool) -> bool {
    repeatable && body_at_hand
}

/// Whether a failed attempt met a stale connection: one reused from a pool that failed before
/// any byte of a response because the upstream had closed or reset it while it was idle (an
/// engine that knows marks such an error `ReusedOnly`, as Pingora's does; else it is a closed,
/// read or write error — not a timeout, which is the endpoint's). It says nothing about the
/// endpoint: a replayable request is sent again over a fresh connection, budget aside. Only
/// the upstream's errors: a client that closed or reset its side is not a stale connection.
pub(crate) fn is_stale(reused: bool, response_begun: bool, e: &Error) -> bool {
    reused
        && !response_begun
        && e.esource() == &ErrorSource::Upstream
        && (matches!(e.retry, RetryType::ReusedOnly)
            || matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            ))
}

/// Whether a failed connect sent nothing to the upstream: refused, unrouted, or no answer
/// to the connect in time (a TLS or HTTP/2 handshake that failed did reach it).
pub(crate) fn sent_nothing(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectError
            | ErrorType::BindError
            | ErrorType::SocketError
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_connection_is_the_upstreams_and_before_any_response() {
        let upstream = |etype| {
            let mut e = Error::new(etype);
            e.esource = ErrorSource::Upstream;
            e
        };
        let closed = upstream(ErrorType::ConnectionClosed);
        assert!(is_stale(true, false, &closed));
        assert!(!is_stale(false, false, &closed), "a fresh connection");
        assert!(!is_stale(true, true, &closed), "a response had begun");
        assert!(!is_stale(true, false, &upstream(ErrorType::ReadTimedout)));
        let mut client_gone = Error::new(ErrorType::ConnectionClosed);
        client_gone.esource = ErrorSource::Downstream;
        assert!(!is_stale(true, false, &client_gone), "the client closed");
        let mut marked = upstream(ErrorType::H2Error);
        marked.retry = RetryType::ReusedOnly;
        assert!(is_stale(true, false, &marked));
    }

    #[test]
    fn only_connects_that_reached_nobody_sent_nothing() {
        assert!(sent_nothing(&Error::new(ErrorType::ConnectRefused)));
        assert!(sent_nothing(&Error::new(ErrorType::ConnectTimedout)));
        assert!(!sent_nothing(&Error::new(ErrorType::TLSHandshakeFailure)));
        assert!(!sent_nothing(&Error::new(ErrorType::InvalidCert)));
    }
}
