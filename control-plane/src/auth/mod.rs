//! Authentication and role-based access (BR-001).
//!
//! One tower layer ([`AuthLayer`]) in front of every service looks each call's method up in
//! [`required_access`], checks the bearer token it carries, and puts the [`Caller`] in the
//! request's extensions; handlers never see an unauthenticated or unauthorised call and never
//! let a client name itself.

mod layer;
pub mod sign_in;
mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use ipnet::IpNet;
use presswork_proto::v1::Role;
use subtle::ConstantTimeEq;
use tonic::Status;

pub use layer::{AuthLayer, AuthService};
use sign_in::{Refusal, SignInLimits};
pub use tokens::{TokenIssuer, VerifiedToken};
use tracing::warn;

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
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<IpNet>,
}

/// Checks credentials: passwords at sign-in, bearer tokens on every call.
pub struct Authenticator {
    store: Store,
    issuer: TokenIssuer,
    worker_tokens: Vec<String>,
    trusted_proxies: Vec<IpNet>,
    /// Sign-in attempts per client address, and failures per (user, address).
    limits: SignInLimits,
    /// Verified against when the user does not exist, so timing does not tell who exists.
    dummy_hash: String,
}

pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest user name and password a sign-in may carry; longer ones are refused before
/// anything is looked up or stored.
pub const MAX_USERNAME_BYTES: usize = 256;
pub const MAX_PASSWORD_BYTES: usize = 1024;
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
        Ok(Arc::new(Authenticator {
            store,
            issuer: TokenIssuer::new(&key, settings.token_ttl).map_err(StoreError::Corrupt)?,
            worker_tokens: settings.worker_tokens,
            trusted_proxies: settings.trusted_proxies,
            limits: SignInLimits::default(),
            dummy_hash: hash_password("presswork-timing-equaliser").unwrap_or_default(),
        }))
    }

    /// The address a call comes from: the TCP peer's, or the client a trusted proxy names in
    /// `X-Forwarded-For` (see [`sign_in::client_address`]).
    pub fn client_address<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl DoubleEndedIterator<Item = Option<&'a str>>,
    ) -> Option<IpAddr> {
        sign_in::client_address(peer, forwarded_for, &self.trusted_proxies)
    }

    /// Signs a user in: a token if the password matches an enabled account. Overlong names and
    /// passwords are refused first ([`check_credentials_length`]); then the address's limit is
    /// counted, then the (user, address) pair's lock checked. Only a failure is stored, per pair.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<(String, i64, UserRecord), Status> {
        check_credentials_length(username, password)?;
        // A call without a TCP peer (none today) shares one budget.
        let source = source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.limits
            .admit_source(source)
            .and_then(|()| self.limits.check_pair(username, source, Instant::now()))
            .map_err(refused)?;
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
                self.limits.record_success(username, source);
                let (token, expires) =
                    self.issuer
                        .issue(&user.username, user.role, user.credential_version);
                Ok((token, expires, user))
            }
            _ => {
                if let Some(lock) = self.limits.record_failure(username, source, Instant::now()) {
                    warn!(
                        %source,
                        lock_seconds = lock.as_secs(),
                        "repeated failed sign-ins for one user from one address: locked"
                    );
                }
                Err(Status::unauthenticated(
                    "wrong username or password, or the account is disabled: check them, or ask an administrator",
                ))
            }
        }
    }

    /// How many addresses and (user, address) pairs the sign-in limits hold now.
    pub fn tracked_sign_in_keys(&self) -> (usize, usize) {
        (
            self.limits.tracked_sources(),
            self.limits.tracked_failures(),
        )
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
            Some(user) if user.disabled => Err(Status::unauthenticated(
                "this token's account is disabled: sign in again with an enabled account",
            )),
            Some(user) if verified.credential_version != Some(user.credential_version) => Err(
                Status::unauthenticated(if verified.credential_version.is_none() {
                    "this token is from an older version of the control plane: sign in again"
                } else {
                    "your password was changed (or your account disabled and enabled again) after this token was issued: sign in again"
                }),
            ),
            Some(user) => Ok((user, verified)),
            None => Err(Status::unauthenticated(
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

/// Refuses a user name or password longer than any account can have, before anything about
/// the call is stored (a long name would otherwise be kept as a limiter's key).
pub fn check_credentials_length(username: &str, password: &str) -> Result<(), Status> {
    if username.len() > MAX_USERNAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "the username is {} bytes long; user names have at most {MAX_USERNAME_BYTES}: check it",
            username.len()
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Status::invalid_argument(format!(
            "the password is {} bytes long; passwords have at most {MAX_PASSWORD_BYTES}: check it",
            password.len()
        )));
    }
    Ok(())
}

fn refused(refusal: Refusal) -> Status {
    Status::resource_exhausted(match refusal {
        Refusal::SourceLimited => format!(
            "too many sign-in attempts from this address (more than {} a minute): wait a minute and try again",
            sign_in::SOURCES_PER_MINUTE
        ),
        Refusal::TooManySources => {
            "too many addresses are signing in at once: wait a minute and try again".to_owned()
        }
        Refusal::Locked { remaining } => format!(
            "too many failed sign-ins for this user from this address: wait {} s and try again (other addresses are not affected)",
            remaining.as_secs().max(1)
        ),
    })
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
