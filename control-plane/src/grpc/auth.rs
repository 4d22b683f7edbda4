//! `AuthService`: sign in, and who am I.

use std::sync::Arc;

use presswork_proto::v1::auth_service_server::AuthService;
use presswork_proto::v1::{LoginRequest, LoginResponse, User, WhoAmIRequest, WhoAmIResponse};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::{Authenticator, Caller, VerifiedToken};

pub struct AuthApi {
    pub auth: Arc<Authenticator>,
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let source = self.auth.client_address(
            request.remote_addr().map(|a| a.ip()),
            request
                .metadata()
                .get_all("x-forwarded-for")
                .iter()
                .map(|value| value.to_str().ok()),
        );
        let req = request.into_inner();
        if req.username.is_empty() || req.password.is_empty() {
            return Err(Status::invalid_argument(
                "username and password are both required",
            ));
        }
        let (token, expires_at_unix_ms, user) = self
            .auth
            .login(&req.username, &req.password, source)
            .await?;
        info!(username = %user.username, "user signed in");
        Ok(Response::new(LoginResponse {
            token,
            expires_at_unix_ms,
            user: Some(User {
                username: user.username,
                role: user.role as i32,
                disabled: user.disabled,
            }),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let Some(Caller::User { name, role }) = request.extensions().get::<Caller>().cloned()
        else {
            return Err(Status::unauthenticated(
                "WhoAmI needs a user's bearer token: sign in first",
            ));
        };
        let expires = request
            .extensions()
            .get::<VerifiedToken>()
            .map_or(0, |t| t.expires_at_unix_ms);
        Ok(Response::new(WhoAmIResponse {
            user: Some(User {
                username: name,
                role: role as i32,
                disabled: false,
            }),
            token_expires_at_unix_ms: expires,
        }))
    }
}
