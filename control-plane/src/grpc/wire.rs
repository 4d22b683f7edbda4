//! Statuses for requests that never reach a handler because their bytes are wrong.
//!
//! tonic answers a body that is not the method's protobuf message with `INTERNAL`, and one
//! over the size limit with `OUT_OF_RANGE`. Both are the caller's mistake, not the server's:
//! this layer, around each service, turns them into `INVALID_ARGUMENT` and
//! `RESOURCE_EXHAUSTED` with what to do. A handler's own statuses pass through unchanged.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::codegen::http::{HeaderValue, Request, Response, header};
use tonic::{Code, Status};

/// Wraps `service` in [`WireErrors`].
pub fn mapped<S>(service: S) -> WireErrors<S> {
    WireErrors { inner: service }
}

#[derive(Clone)]
pub struct WireErrors<S> {
    inner: S,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for WireErrors<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<B>> for WireErrors<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let method = request.uri().path().to_string();
            let response = inner.call(request).await?;
            // Only a trailers-only answer (no message sent) carries its status in the headers.
            let Some(status) = Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            let Some(mapped) = caller_error(&method, &status) else {
                return Ok(response);
            };
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let mut replaced = mapped.into_http::<tonic::body::Body>();
            replaced.headers_mut().insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("application/grpc")),
            );
            Ok(replaced)
        })
    }
}

/// The status a caller should get for tonic's own decode or size refusal of its request.
pub fn caller_error(method: &str, status: &Status) -> Option<Status> {
    match status.code() {
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            Some(Status::invalid_argument(format!(
                "the request to {method} is not a valid protobuf message for it ({}): build requests from presswork's proto/ files, and check that client and server are of the same version",
                status.message()
            )))
        }
        Code::OutOfRange if status.message().contains("message length too large") => {
            Some(Status::resource_exhausted(format!(
                "the request to {method} is too large ({}): send less at once (page, or split it)",
                status.message()
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonics_decode_and_size_refusals_become_the_callers_errors() {
        let method = "/presswork.v1.JobService/GetJob";
        let decode = Status::internal("failed to decode Protobuf message: invalid wire type");
        let mapped = caller_error(method, &decode).unwrap();
        assert_eq!(mapped.code(), Code::InvalidArgument);
        assert!(mapped.message().contains("GetJob"), "{mapped:?}");
        let size = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(
            caller_error(method, &size).unwrap().code(),
            Code::ResourceExhausted
        );
        // A handler's own statuses are left alone.
        assert!(caller_error(method, &Status::internal("database down")).is_none());
        assert!(caller_error(method, &Status::out_of_range("after_sequence ahead")).is_none());
    }
}
