//! The API's request-rate limit: a token bucket per client address (GCRA, the `governor`
//! crate), so one misbehaving client cannot starve the others or the validator. Over the limit a
//! client gets `429 Too Many Requests` with `Retry-After`; the limit is per validator, set in
//! `validator.json` (`api_requests_per_second`, `api_request_burst`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Default sustained requests per second from one client address.
pub const REQUESTS_PER_SECOND_DEFAULT: u32 = 20_000;
/// Default burst above the sustained rate.
pub const REQUEST_BURST_DEFAULT: u32 = 40_000;

pub struct RequestLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl RequestLimiter {
    /// `None` when either figure is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Arc<Self>> {
        let quota = Quota::per_second(NonZeroU32::new(per_second)?).allow_burst(NonZeroU32::new(burst)?);
        Some(Arc::new(RequestLimiter { limiter: RateLimiter::keyed(quota), clock: DefaultClock::default() }))
    }

    /// `Err(wait)` when `client` is over its rate.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter.check_key(&client).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets clients whose buckets are full again (bounds the table's memory).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The middleware: requests without a peer address (in-process tests) are not limited.
pub async fn limit(State(limiter): State<Option<Arc<RequestLimiter>>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<crate::tls::ClientAddr>>().map(|c| c.0.0.ip());
    if let (Some(limiter), Some(peer)) = (limiter, peer)
        && let Err(wait) = limiter.check(peer)
    {
        return crate::api::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "too many requests from this client; retry later",
        )
        .retry_after(wait.as_secs())
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_bucket() {
        let limiter = RequestLimiter::new(1, 3).unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(b).is_ok(), "another client is not affected");
        assert!(RequestLimiter::new(0, 10).is_none() && RequestLimiter::new(10, 0).is_none());
    }
}
