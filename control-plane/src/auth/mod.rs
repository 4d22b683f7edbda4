//! Authentication and role-based access (BR-001).
//!
//! One tower layer ([`AuthLayer`]) in front of every service looks each call's method up in
//! [`required_access`], checks the bearer token it carries, and puts the [`Caller`] in the
//! request's extensions; handlers never see an unauthenticated or unauthorised call and never
//! let a client name itself.

mod layer;
mod tokens;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use presswork_proto::v1::Role;
use subtle::ConstantTimeEq;
use tonic::Status;

pub use layer::{AuthLayer, AuthService};
pub use tokens::{TokenIssuer, VerifiedToken};

use crate::store::{Store, StoreError, UserRecord};

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (sign-in, health, reflection).
    Public,
    /// A worker process, with a worker credential.
    Worker,
    /// A signed-in user with at least this role.
    User(Role),
}

/// The access table: every method the server serves, and who may call it. A method missing
/// here is refused to everyone (a test walks the server's descriptors to keep it complete).
pub fn required_access(path: &str) -> Option<Access> {
    use Access::*;
    Some(match path {
        "/presswork.v1.AuthService/Login" => Public,
        "/presswork.v1.AuthService/WhoAmI" => User(Role::Viewer),
        "/presswork.v1.JobService/GetJob"
        | "/presswork.v1.JobService/ListJobs"
        | "/presswork.v1.JobService/WatchJobs"
        | "/presswork.v1.JobService/GetJobLog"
        | "/presswork.v1.JobService/WatchJobLog" => User(Role::Viewer),
        "/presswork.v1.JobService/SubmitJob" => User(Role::Operator),
        "/presswork.v1.JobService/CancelJob" => User(Role::Administrator),
        "/presswork.v1.ReportService/GetReport" | "/presswork.v1.ReportService/ListReports" => {
            User(Role::Viewer)
        }
        // A configuration decides which files, URLs and databases workers read and write.
        "/presswork.v1.ReportService/CreateReport"
        | "/presswork.v1.ReportService/UpdateReport"
        | "/presswork.v1.ReportService/DeleteReport" => User(Role::Administrator),
        "/presswork.v1.WorkerService/Connect" => Worker,
        "/grpc.health.v1.Health/Check"
        | "/grpc.health.v1.Health/Watch"
        | "/grpc.health.v1.Health/List" => Public,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => Public,
        _ => return None,
    })
}

/// The authenticated identity behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    User { name: String, role: Role },
    Worker,
}

impl Caller {
    /// The name recorded as the actor in execution logs.
    pub fn name(&self) -> &str {
        match self {
            Caller::User { name, .. } => name,
            Caller::Worker => "worker",
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Administrator => "administrator",
        Role::Operator => "operator",
        Role::Viewer => "viewer",
        Role::Unspecified => "none",
    }
}

pub fn role_from_name(name: &str) -> Option<Role> {
    match name {
        "administrator" => Some(Role::Administrator),
        "operator" => Some(Role::Operator),
        "viewer" => Some(Role::Viewer),
        _ => None,
    }
}

/// Whether `role` includes everything `needed` may do.
pub fn role_allows(role: Role, needed: Role) -> bool {
    role != Role::Unspecified && role as i32 >= needed as i32
}

/// Settings of authentication.
#[derive(Clone)]
pub struct AuthSettings {
    /// HMAC key for tokens; `None`: the one stored in the database (generated on first start).
    pub signing_key: Option<Vec<u8>>,
    pub token_ttl: Duration,
    /// Credentials workers present on `WorkerService.Connect`.
    pub worker_tokens: Vec<String>,
}

/// Checks credentials: passwords at sign-in, bearer tokens on every call.
pub struct Authenticator {
    store: Store,
    issuer: TokenIssuer,
    worker_tokens: Vec<String>,
    /// Sign-in attempts per user name and per client address.
    per_user: DefaultKeyedRateLimiter<String>,
    per_source: DefaultKeyedRateLimiter<IpAddr>,
    /// Verified against when the user does not exist, so timing does not tell who exists.
    dummy_hash: String,
}

/// Sign-in attempts allowed per minute for one user name, and for one client address.
const LOGINS_PER_USER_PER_MINUTE: u32 = 10;
const LOGINS_PER_SOURCE_PER_MINUTE: u32 = 30;
pub const MIN_PASSWORD_LEN: usize = 8;
const SIGNING_KEY_SETTING: &str = "token_signing_key";

impl Authenticator {
    pub async fn new(store: Store, settings: AuthSettings) -> Result<Arc<Self>, StoreError> {
        let key = match settings.signing_key {
            Some(key) => key,
            None => {
                let stored = store
                    .setting_or_init(SIGNING_KEY_SETTING, || hex(&rand::random::<[u8; 32]>()))
                    .await?;
                unhex(&stored).ok_or_else(|| {
                    StoreError::Corrupt("the stored token signing key is not hex".into())
                })?
            }
        };
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Ok(Arc::new(Authenticator {
            store,
            issuer: TokenIssuer::new(&key, settings.token_ttl).map_err(StoreError::Corrupt)?,
            worker_tokens: settings.worker_tokens,
            per_user: RateLimiter::keyed(per_minute(LOGINS_PER_USER_PER_MINUTE)),
            per_source: RateLimiter::keyed(per_minute(LOGINS_PER_SOURCE_PER_MINUTE)),
            dummy_hash: hash_password("presswork-timing-equaliser").unwrap_or_default(),
        }))
    }

    /// Signs a user in: a token if the password matches an enabled account.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<(String, i64, UserRecord), Status> {
        let limited = self.per_user.check_key(&username.to_string()).is_err()
            || source.is_some_and(|ip| self.per_source.check_key(&ip).is_err());
        if limited {
            return Err(Status::resource_exhausted(
                "too many sign-in attempts for this user or from this address: wait a minute and try again",
            ));
        }
        let user = self
            .store
            .user(username)
            .await
            .map_err(crate::grpc::store_status)?;
        let hash = user
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str())
            .to_owned();
        // Argon2id takes tens of milliseconds of CPU by design: off the async threads, so that a
        // sign-in never delays a cancel.
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| {
                Status::internal(format!(
                    "checking the password failed ({e}); try again, and see the control plane's log if it persists"
                ))
            })?;
        match user {
            Some(user) if matches && !user.disabled => {
                let (token, expires) = self.issuer.issue(&user.username, user.role);
                Ok((token, expires, user))
            }
            _ => Err(Status::unauthenticated(
                "wrong username or password, or the account is disabled: check them, or ask an administrator",
            )),
        }
    }

    /// The caller behind a bearer token, as the store says now (a disabled account or a
    /// changed role takes effect at once).
    pub async fn user_caller(&self, token: &str) -> Result<(UserRecord, VerifiedToken), Status> {
        let verified = self.issuer.verify(token)?;
        let user = self
            .store
            .user(&verified.username)
            .await
            .map_err(crate::grpc::store_status)?;
        match user {
            Some(user) if !user.disabled => Ok((user, verified)),
            _ => Err(Status::unauthenticated(
                "this token's account is disabled or no longer exists: sign in again with an enabled account",
            )),
        }
    }

    /// Whether `token` is one of the configured worker credentials (constant time).
    pub fn is_worker_token(&self, token: &str) -> bool {
        let mut matched = subtle::Choice::from(0);
        for known in &self.worker_tokens {
            matched |= known.as_bytes().ct_eq(token.as_bytes());
        }
        matched.into()
    }

    pub fn has_worker_tokens(&self) -> bool {
        !self.worker_tokens.is_empty()
    }
}

/// An Argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("could not hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (constant time in the comparison).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a signing key given in configuration: at least 32 bytes, as hex or as text.
pub fn parse_signing_key(value: &str) -> Result<Vec<u8>, String> {
    let bytes = unhex(value).unwrap_or_else(|| value.as_bytes().to_vec());
    if bytes.len() < 32 {
        return Err("the token signing key must be at least 32 bytes (64 hex digits): generate one with `openssl rand -hex 32`".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
