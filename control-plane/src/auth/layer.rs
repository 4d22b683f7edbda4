//! The one layer that authenticates and authorises every call, before any handler runs.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use presswork_proto::v1::Role;
use tonic::Status;
use tonic::codegen::http::{HeaderMap, Request, Response};

use super::{
    Access, Authenticator, Caller, VerifiedToken, required_access, role_allows, role_name,
};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

/// Routed under the wrapped service's name: the layer goes around each service.
impl<S: tonic::server::NamedService> tonic::server::NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            match authorize(&auth, request.uri().path(), request.headers()).await {
                Ok(Some((caller, token))) => {
                    request.extensions_mut().insert(caller);
                    if let Some(token) = token {
                        request.extensions_mut().insert(token);
                    }
                    inner.call(request).await
                }
                Ok(None) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// `Ok(None)`: a public method. `Ok(Some(caller))`: allowed. `Err`: refused, with why.
async fn authorize(
    auth: &Authenticator,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<(Caller, Option<VerifiedToken>)>, Status> {
    let Some(access) = required_access(path) else {
        return Err(Status::unimplemented(format!(
            "{path} is not a method of this server"
        )));
    };
    if access == Access::Public {
        return Ok(None);
    }
    let token = bearer(headers)?;
    match access {
        Access::Public => Ok(None),
        Access::Worker => {
            if !auth.has_worker_tokens() {
                return Err(Status::unauthenticated(
                    "no worker credential is configured on the control plane: start it with --worker-token (or PRESSWORK_WORKER_TOKEN)",
                ));
            }
            if auth.is_worker_token(token) {
                Ok(Some((Caller::Worker, None)))
            } else {
                Err(Status::unauthenticated(
                    "WorkerService needs a worker credential: start the worker with --token set to one of the control plane's --worker-token values",
                ))
            }
        }
        Access::User(needed) => {
            let (user, verified) = auth.user_caller(token).await?;
            if !role_allows(user.role, needed) {
                return Err(Status::permission_denied(denied_message(
                    path,
                    &user.username,
                    user.role,
                    needed,
                )));
            }
            Ok(Some((
                Caller::User {
                    name: user.username,
                    role: user.role,
                },
                Some(verified),
            )))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Status> {
    let value = headers.get("authorization").ok_or_else(|| {
        Status::unauthenticated("this call needs a bearer token: sign in (`presswork login`) and send `authorization: Bearer <token>`")
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated(
                "the authorization header must be `Bearer <token>`: sign in again",
            )
        })
}

fn denied_message(path: &str, user: &str, role: Role, needed: Role) -> String {
    let method = path.rsplit('/').next().unwrap_or(path);
    if needed == Role::Administrator && method == "CancelJob" {
        format!(
            "Only administrators may cancel jobs: {user} has the {} role. Ask an administrator to cancel it, or for the administrator role.",
            role_name(role)
        )
    } else {
        format!(
            "{method} needs the {} role or higher; {user} has the {} role. Ask an administrator for access.",
            role_name(needed),
            role_name(role)
        )
    }
}
