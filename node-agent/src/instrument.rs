//! The wrapper around every RPC: one span, one log line at the end with the outcome, and the conversion of
//! reefd's error to a gRPC status. Handlers only return `Result<T, ReefError>`.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use crate::error::{ReefError, chain};

pub async fn call<T>(
    method: &'static str,
    handler: impl Future<Output = Result<T, ReefError>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let span = tracing::info_span!("rpc", method);
    async move {
        let _counted = crate::heap::CallGuard::enter();
        let start = Instant::now();
        let result = handler.await;
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
