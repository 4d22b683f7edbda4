//! One port for everything: gRPC (HTTP/2), grpc-web (HTTP/1.1, for the dashboard) and the
//! dashboard's static files.
//!
//! Each gRPC service is wrapped, in this order, by the auth layer and by tonic-web's
//! `GrpcWebLayer` (never the whole server: that layer answers any other HTTP/1.1 request with
//! 400). Requests that match no service fall back to the static files; a gRPC request to an
//! unknown method still gets `UNIMPLEMENTED`.
//!
//! Static files are served only from inside the web directory (a symlink that leads out of it
//! is not followed: 404), with a Content-Security-Policy and the other headers in
//! [`SECURITY_HEADERS`]. A path that is no file gets `index.html` only when it is a browser's
//! navigation (GET, no file extension, `Accept: text/html`): the dashboard routes those in the
//! browser. Anything else is 404.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use percent_encoding::percent_decode_str;
use tonic::Status;
use tonic::codegen::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use tonic::service::Routes;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::services::ServeFile;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::{info, warn};

use crate::auth::{AuthLayer, AuthService};

/// The dashboard is a Vite build: its scripts and styles are files of its own origin, and it
/// calls grpc-web on the same origin. Inline styles stay allowed: the dialog library injects
/// a `<style>` element and React sets `style` attributes.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Headers on every static-file response (404s included), besides the Content-Security-Policy
/// (`--web-csp`, [`CONTENT_SECURITY_POLICY`] by default).
pub const SECURITY_HEADERS: [(HeaderName, &str); 2] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// A gRPC service behind the auth layer, reachable over gRPC and grpc-web.
pub fn guarded<S>(auth: &AuthLayer, service: S) -> tonic_web::GrpcWebService<AuthService<S>> {
    tonic_web::GrpcWebLayer::new().layer(auth.layer(service))
}

/// The gRPC routes, with the dashboard in `web_dir` as the fallback when that folder exists,
/// its files served with the Content-Security-Policy `csp`.
pub fn with_dashboard(routes: Routes, web_dir: &Path, csp: HeaderValue) -> Routes {
    let root = match web_dir.canonicalize() {
        Ok(root) if root.join("index.html").is_file() => root,
        _ => {
            warn!(
                web_dir = %web_dir.display(),
                "no dashboard build found (no index.html): serving gRPC only; build it with `npm run build` in web/ or set --web-dir"
            );
            return routes;
        }
    };
    info!(web_dir = %root.display(), "serving the dashboard");
    let root: Arc<Path> = Arc::from(root);
    let [(nosniff, nosniff_value), (referrer, referrer_value)] = SECURITY_HEADERS;
    let files = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            nosniff,
            HeaderValue::from_static(nosniff_value),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            referrer,
            HeaderValue::from_static(referrer_value),
        ))
        .service_fn(move |request: Request<Body>| {
            let root = Arc::clone(&root);
            async move { Ok::<_, Infallible>(serve_file(&root, request).await) }
        });
    let fallback = tower::service_fn(move |request: Request<Body>| {
        let files = files.clone();
        async move {
            if let Some(content_type) = grpc_content_type(request.headers()) {
                // Answer in the caller's protocol (gRPC or grpc-web), as a service would.
                let path = request.uri().path();
                let mut response =
                    Status::unimplemented(format!("{path} is not a method of this server"))
                        .into_http::<Body>();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
                return Ok::<_, Infallible>(response);
            }
            files.oneshot(request).await
        }
    });
    Routes::from(routes.into_axum_router().fallback_service(fallback))
}

/// The file `request` names under `root`, `index.html` for a browser's navigation, or 404.
async fn serve_file(root: &Path, request: Request<Body>) -> Response<Body> {
    let file = match resolve(root, request.uri().path()).await {
        Some(file) => file,
        None if is_navigation(&request) => root.join("index.html"),
        // Browsers ask for an icon by themselves and log a 404 as a console error; the
        // dashboard ships none.
        None if request.uri().path() == "/favicon.ico" => return no_content(),
        None => return not_found(),
    };
    match ServeFile::new(file).oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// The regular file under `root` that `uri_path` names (a directory's `index.html`), after
/// symlinks are resolved; `None` when there is none or it lies outside `root`.
async fn resolve(root: &Path, uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(uri_path).decode_utf8().ok()?;
    let mut path = root.to_path_buf();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part if part.contains(['\\', '\0']) => return None,
            part => path.push(part),
        }
    }
    let mut real = tokio::fs::canonicalize(&path).await.ok()?;
    if tokio::fs::metadata(&real).await.ok()?.is_dir() {
        real = tokio::fs::canonicalize(real.join("index.html"))
            .await
            .ok()?;
    }
    if !real.starts_with(root) {
        warn!(
            path = %decoded,
            target = %real.display(),
            "refused a static file outside the web directory (a symlink leads out of it)"
        );
        return None;
    }
    tokio::fs::metadata(&real)
        .await
        .ok()
        .filter(|meta| meta.is_file())
        .map(|_| real)
}

/// A browser loading one of the dashboard's own routes (`/jobs/…`): GET or HEAD of a path
/// without a file extension, asking for HTML.
fn is_navigation(request: &Request<Body>) -> bool {
    let method = request.method();
    let last = request.uri().path().rsplit('/').next().unwrap_or_default();
    (method == Method::GET || method == Method::HEAD)
        && !last.contains('.')
        && request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn not_found() -> Response<Body> {
    let mut response = Response::new(Body::from("not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn grpc_content_type(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(header::CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}
