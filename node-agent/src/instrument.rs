//! The wrapper around every RPC: one span, one log line at the end with the outcome, the client's deadline, and
//! the conversion of reefd's error to a gRPC status. Handlers only return `Result<T, ReefError>`.
//!
//! The deadline: a client that sets one sends it as a `grpc-timeout` header. tonic enforces it too, but by
//! dropping the call and answering Cancelled, where gRPC clients (and the CRI conformance tests) expect
//! DeadlineExceeded. `Deadlines` reads the header before tonic starts its own timer, so the deadline `call`
//! enforces is never later than tonic's, and `call` answers first. Dropping the handler is how it is stopped,
//! as before; a handler whose work must be undone (PullImage) does it in a task of its own.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::http;
use tracing::Instrument;

use crate::error::{ReefError, chain};

tokio::task_local! {
    /// When the client of the call being served stops waiting, if it said.
    static DEADLINE: Option<Instant>;
}

/// The tower layer that gives every call its client's deadline (see the module's comment).
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadlines;

impl<S> tower::Layer<S> for Deadlines {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> WithDeadline<S> {
        WithDeadline(inner)
    }
}

#[derive(Debug, Clone)]
pub struct WithDeadline<S>(S);

impl<S, B> tower::Service<http::Request<B>> for WithDeadline<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tokio::task::futures::TaskLocalFuture<Option<Instant>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        DEADLINE.scope(deadline, self.0.call(request))
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n), as the gRPC HTTP/2 protocol says.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Runs `handler` until `deadline`. The clock is read on every poll, not only when this timer fires: tonic's
/// timer for the same deadline started later but can wake the call in the same millisecond tick, and whichever
/// answers first decides the code the client sees.
async fn within<T>(deadline: Instant, handler: impl Future<Output = Result<T, ReefError>>) -> Result<T, ReefError> {
    let mut handler = std::pin::pin!(handler);
    let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline.into()));
    std::future::poll_fn(|cx| {
        if Instant::now() >= deadline || timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(ReefError::DeadlineExceeded("the client's deadline passed".into())));
        }
        handler.as_mut().poll(cx)
    })
    .await
}

pub async fn call<T>(
    method: &'static str,
    handler: impl Future<Output = Result<T, ReefError>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let span = tracing::info_span!("rpc", method);
    let deadline = DEADLINE.try_with(|d| *d).ok().flatten();
    async move {
        let _counted = crate::heap::CallGuard::enter();
        let start = Instant::now();
        let result = match deadline {
            Some(deadline) => within(deadline, handler).await,
            None => handler.await,
        };
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(reply) => {
                tracing::debug!(elapsed_ms, "ok");
                Ok(tonic::Response::new(reply))
            }
            Err(e) => {
                if matches!(e, ReefError::Unimplemented(_)) {
                    tracing::debug!(elapsed_ms, error = %chain(&e), "failed");
                } else {
                    tracing::warn!(elapsed_ms, code = ?e.code(), error = %chain(&e), "failed");
                }
                Err(e.into())
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_are_ignored() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "5", "5s", "123456789S", "-1S", "+1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded_and_its_handler_is_dropped() {
        struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Dropped(std::sync::Arc::clone(&dropped));
        let slow = async move {
            let _guard = guard;
            std::future::pending::<Result<(), ReefError>>().await
        };
        let deadline = Instant::now() + Duration::from_millis(20);
        let status = DEADLINE.scope(Some(deadline), call("Slow", slow)).await.expect_err("past its deadline");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(Instant::now() >= deadline);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_call_within_its_deadline_or_without_one_answers_normally() {
        let far = Instant::now() + Duration::from_secs(60);
        let reply = DEADLINE.scope(Some(far), call("Fast", async { Ok::<_, ReefError>(7) })).await;
        assert_eq!(reply.expect("in time").into_inner(), 7);
        let reply = call("NoDeadline", async { Ok::<_, ReefError>(8) }).await;
        assert_eq!(reply.expect("no deadline").into_inner(), 8);
    }

    #[tokio::test]
    async fn a_deadline_already_past_answers_without_running_the_handler() {
        let past = Instant::now();
        let ran = std::sync::atomic::AtomicBool::new(false);
        let handler = async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ReefError>(())
        };
        let status = DEADLINE.scope(Some(past), call("Late", handler)).await.expect_err("already late");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
