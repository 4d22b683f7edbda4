//! Signed, expiring bearer tokens (JWT, HS256). Only HS256 is accepted, so `alg: none` and
//! algorithm-confusion tokens are refused.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use presswork_proto::v1::Role;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::time::now_ms;

const ISSUER: &str = "presswork";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    iss: String,
    iat: i64,
    exp: i64,
    /// The user's credential version at sign-in: a token whose version is not the stored one
    /// (the password was changed since) is refused. Absent in tokens of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ver: Option<i64>,
}

/// A token that verified: whose it is and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub username: String,
    pub expires_at_unix_ms: i64,
    /// The credential version the token was issued for (`None`: an older token without one).
    pub credential_version: Option<i64>,
}

pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenIssuer {
    pub fn new(key: &[u8], ttl: Duration) -> Result<Self, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 0;
        let invalid =
            |e: jsonwebtoken::errors::Error| format!("the token signing key cannot be used: {e}");
        Ok(TokenIssuer {
            encoding: EncodingKey::from_secret(key).map_err(invalid)?,
            decoding: DecodingKey::from_secret(key).map_err(invalid)?,
            validation,
            ttl,
        })
    }

    /// A token for `username` at credential version `version`, and when it expires (Unix ms).
    pub fn issue(&self, username: &str, role: Role, version: i64) -> (String, i64) {
        self.issue_at(username, role, version, now_ms() / 1000)
    }

    fn issue_at(&self, username: &str, role: Role, version: i64, now: i64) -> (String, i64) {
        let exp = now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: username.into(),
            role: super::role_name(role).into(),
            iss: ISSUER.into(),
            iat: now,
            exp,
            ver: Some(version),
        };
        // Encoding an HS256 token with a valid key cannot fail.
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default();
        (token, exp * 1000)
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, Status> {
        match decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(VerifiedToken {
                username: data.claims.sub,
                expires_at_unix_ms: data.claims.exp * 1000,
                credential_version: data.claims.ver,
            }),
            Err(e) => Err(Status::unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired: sign in again",
                ErrorKind::InvalidSignature => {
                    "the token's signature is not valid: sign in again to get a token from this server"
                }
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "the token is not signed with HS256: sign in again to get a token from this server"
                }
                _ => "the token is malformed or not from this server: sign in again",
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires_and_only_with_its_key() {
        let issuer = TokenIssuer::new(&[7; 32], Duration::from_secs(60)).unwrap();
        let (token, expires) = issuer.issue("ada", Role::Administrator, 3);
        let verified = issuer.verify(&token).unwrap();
        assert_eq!(verified.username, "ada");
        assert_eq!(verified.expires_at_unix_ms, expires);
        assert_eq!(verified.credential_version, Some(3));

        let other = TokenIssuer::new(&[8; 32], Duration::from_secs(60)).unwrap();
        assert_eq!(
            other.verify(&token).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );

        let (old, _) = issuer.issue_at("ada", Role::Administrator, 0, now_ms() / 1000 - 3600);
        let err = issuer.verify(&old).unwrap_err();
        assert!(err.message().contains("expired"), "{err:?}");
    }

    #[test]
    fn unsigned_and_garbage_tokens_are_refused() {
        let issuer = TokenIssuer::new(&[7; 32], Duration::from_secs(60)).unwrap();
        // {"alg":"none","typ":"JWT"}.{"sub":"ada","role":"administrator","iss":"presswork","iat":0,"exp":9999999999}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZGEiLCJyb2xlIjoiYWRtaW5pc3RyYXRvciIsImlzcyI6InByZXNzd29yayIsImlhdCI6MCwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(
            issuer.verify(none).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            issuer.verify("not a token").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            issuer.verify("").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
