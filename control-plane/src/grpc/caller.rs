//! Who is calling. One tower layer in front of every service puts a [`Caller`] in each
//! request's extensions; handlers read it with [`caller`] and never trust the client to name
//! itself. Authentication (BR-001) replaces [`LocalCallerLayer`] with a layer that verifies a
//! bearer token against a per-method role table, without touching the handlers.

use tonic::codegen::http::Request as Request_;
use tonic::{Request, Status};

/// The authenticated identity behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
}

/// The caller of a request, as established by the caller layer.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("no caller identity on this request: sign in and retry")
        })
}

/// Until authentication lands, every request is made by the local operator of this
/// control plane (`local`), so every log entry still names an actor.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalCallerLayer;

impl<S> tower::Layer<S> for LocalCallerLayer {
    type Service = LocalCaller<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LocalCaller { inner }
    }
}

#[derive(Clone, Debug)]
pub struct LocalCaller<S> {
    inner: S,
}

impl<S, B> tower::Service<Request_<B>> for LocalCaller<S>
where
    S: tower::Service<Request_<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request_<B>) -> Self::Future {
        request.extensions_mut().insert(Caller {
            name: "local".to_string(),
        });
        self.inner.call(request)
    }
}
