//! One port for everything: gRPC (HTTP/2), grpc-web (HTTP/1.1, for the dashboard) and the
//! dashboard's static files.
//!
//! Each gRPC service is wrapped, in this order, by the auth layer and by tonic-web's
//! `GrpcWebLayer` (never the whole server: that layer answers any other HTTP/1.1 request with
//! 400). Requests that match no service fall back to the static files, with `index.html` for
//! any path that is not a file (the dashboard routes in the browser); a gRPC request to an
//! unknown method still gets `UNIMPLEMENTED`.

use std::convert::Infallible;
use std::path::Path;

use axum::body::Body;
use tonic::Status;
use tonic::codegen::http::{HeaderMap, HeaderValue, Request, header};
use tonic::service::Routes;
use tower::{Layer, ServiceExt};
use tower_http::services::{ServeDir, ServeFile};
use tracing::{info, warn};

use crate::auth::{AuthLayer, AuthService};

/// A gRPC service behind the auth layer, reachable over gRPC and grpc-web.
pub fn guarded<S>(auth: &AuthLayer, service: S) -> tonic_web::GrpcWebService<AuthService<S>> {
    tonic_web::GrpcWebLayer::new().layer(auth.layer(service))
}

/// The gRPC routes, with the dashboard in `web_dir` as the fallback when that folder exists.
pub fn with_dashboard(routes: Routes, web_dir: &Path) -> Routes {
    let index = web_dir.join("index.html");
    if !index.is_file() {
        warn!(
            web_dir = %web_dir.display(),
            "no dashboard build found (no index.html): serving gRPC only; build it with `npm run build` in web/ or set --web-dir"
        );
        return routes;
    }
    info!(web_dir = %web_dir.display(), "serving the dashboard");
    let files = ServeDir::new(web_dir).fallback(ServeFile::new(index));
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
            let response = match files.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(Body::new))
        }
    });
    Routes::from(routes.into_axum_router().fallback_service(fallback))
}

fn grpc_content_type(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(header::CONTENT_TYPE)
        .filter(|v| v.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}
