//! Who is calling, as the auth layer established it.

use tonic::{Request, Status};

pub use crate::auth::Caller;

/// The caller of a request. The auth layer runs before every handler, so a missing caller
/// means a method was wired without it: refuse rather than guess.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("no caller identity on this request: sign in and retry")
        })
}
