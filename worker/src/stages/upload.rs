//! Deliver over HTTP: uploads the report with PUT or POST, retrying with exponential back-off.
//!
//! - Retried: no answer (connection refused or reset, timeout) and HTTP 408, 429 and 5xx, up
//!   to `retries` times, waiting 200 ms × 2ⁿ (at most 10 s) between attempts.
//! - Not retried: any other answer that is not 2xx (a 4xx says the request itself is wrong).
//! - Cancellation: a cancel during an attempt aborts the request (the connection is dropped),
//!   and a cancel during a wait ends the wait at once.
//! - Point of no return: a 2xx answer. From then on the receiver has the report and the job
//!   finishes; before it, a cancel stops the delivery. A receiver that got the whole body just
//!   as the cancel dropped the connection may still keep it, which is why each upload carries
//!   the job's id (`X-Presswork-Job-Id`) for the receiver to recognise a repeat.

use std::path::Path;
use std::time::Duration;

use presswork_proto::v1::LogLevel;

use super::sources::{error_chain, shown_url};
use super::{StageContext, StageError};
use crate::reach::{self, AllowedHosts};

/// The first wait between two attempts; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one attempt may take, sending the report and reading the answer's status.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP method an upload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    Put,
    Post,
}

impl UploadMethod {
    fn method(self) -> reqwest::Method {
        match self {
            UploadMethod::Put => reqwest::Method::PUT,
            UploadMethod::Post => reqwest::Method::POST,
        }
    }
}

/// Where and how a report is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDelivery {
    pub url: reqwest::Url,
    pub method: UploadMethod,
    /// Attempts after the first.
    pub retries: u32,
}

/// The wait after the `failed`-th failed attempt (1-based).
pub fn backoff(failed: u32) -> Duration {
    let factor = 2u32.saturating_pow(failed.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Uploads the file at `pdf`; returns where it went (the URL as shown in logs).
pub async fn run(
    ctx: &StageContext,
    http: &reqwest::Client,
    allowed: &AllowedHosts,
    pdf: &Path,
    delivery: &HttpDelivery,
) -> Result<String, StageError> {
    let shown = shown_url(&delivery.url);
    let refused = |problem: String| {
        StageError::Failed(format!(
            "cannot deliver to {shown}: {problem}; check delivery.params.url"
        ))
    };
    allowed.check_url(&delivery.url).map_err(refused)?;
    let method = delivery.method.method();
    let body = ctx.cancellable(tokio::fs::read(pdf)).await?.map_err(|e| {
        StageError::Failed(format!(
            "cannot read the report {}: {e}; check that --work-dir is readable",
            pdf.display()
        ))
    })?;
    let attempts = delivery.retries.saturating_add(1);
    for attempt in 1..=attempts {
        let request = http
            .request(method.clone(), delivery.url.clone())
            .timeout(ATTEMPT_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/pdf")
            .header("x-presswork-job-id", ctx.job_id())
            .header("x-presswork-attempt", ctx.attempt().to_string())
            .body(body.clone());
        // A cancel drops the request: its connection is closed mid-way.
        let problem = match ctx.cancellable(request.send()).await? {
            Ok(response) if response.status().is_success() => {
                let status = response.status();
                if ctx.enter_point_of_no_return().is_err() {
                    ctx.log_at(
                        LogLevel::Warn,
                        format!("{shown} accepted the report (HTTP {status}) just as the cancel arrived: the receiver has it"),
                    );
                    return Err(StageError::Cancelled);
                }
                ctx.progress(1.0);
                ctx.log(format!(
                    "delivered to {shown} (HTTP {status}, attempt {attempt} of {attempts})"
                ));
                return Ok(shown);
            }
            Ok(response) => {
                let status = response.status();
                let retried = status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                let said = answer_excerpt(ctx, response).await?;
                if !retried {
                    return Err(StageError::Failed(format!(
                        "cannot deliver to {shown}: the server answered {method} with HTTP {status}{said}, which says the request itself is wrong, so it was not retried; check delivery.params.url and delivery.params.method, and that the server accepts a PDF there"
                    )));
                }
                format!("HTTP {status}{said}")
            }
            // Without the URL: its query string may hold a signature.
            Err(error) if reach::is_refused(&error) => {
                return Err(refused(error_chain(&error.without_url())));
            }
            Err(error) => error_chain(&error.without_url()),
        };
        if attempt == attempts {
            return Err(StageError::Failed(format!(
                "cannot deliver to {shown}: {problem} (attempt {attempt} of {attempts}); check that the server is up and reachable from the worker, or raise delivery.params.retries"
            )));
        }
        let wait = backoff(attempt);
        ctx.log_at(
            LogLevel::Warn,
            format!(
                "upload to {shown} failed: {problem} (attempt {attempt} of {attempts}); retrying in {} ms",
                wait.as_millis()
            ),
        );
        ctx.cancellable(tokio::time::sleep(wait)).await?;
    }
    unreachable!("the last attempt returns")
}

/// The start of an error answer's body, to quote: ` ("…")`, or nothing.
async fn answer_excerpt(
    ctx: &StageContext,
    mut response: reqwest::Response,
) -> Result<String, StageError> {
    let first = ctx
        .cancellable(tokio::time::timeout(
            Duration::from_secs(2),
            response.chunk(),
        ))
        .await?;
    Ok(match first {
        Ok(Ok(Some(bytes))) if !bytes.is_empty() => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]);
            format!(" ({})", crate::plugin::protocol::excerpt(text.trim(), 200))
        }
        _ => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u128> = (1..=9).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
