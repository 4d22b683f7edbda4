//! One port for everything: the control plane serves the dashboard's files (public, with an
//! SPA fallback to index.html for the browser's navigations), answers grpc-web behind the same
//! auth layer as gRPC, and still says UNIMPLEMENTED to a gRPC call of an unknown method. The
//! files carry a Content-Security-Policy and stay inside the web directory.

use presswork_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 exchange (the way a browser talks to the control plane): the response's
/// head, lower-cased, and its body.
async fn http1(port: u16, request: &str, body: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the control plane");
    let mut bytes = request.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP response head");
    (
        String::from_utf8_lossy(&response[..split]).to_lowercase(),
        response[split + 4..].to_vec(),
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\nHost: localhost\nConnection: close\n\n")
}

/// What a browser sends when it loads a page.
fn navigate(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\nHost: localhost\nConnection: close\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\n\n"
    )
}

/// A grpc-web call with an empty message, optionally with a bearer token.
fn grpc_web(path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\nHost: localhost\nConnection: close\nContent-Type: application/grpc-web+proto\nX-Grpc-Web: 1\n{auth}Content-Length: 5\n\n"
    )
}

const EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

fn port(cluster: &Cluster) -> u16 {
    cluster
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the cluster URL ends with its port")
}

#[tokio::test]
async fn files_are_public_and_grpc_web_is_guarded() {
    let web = tempfile::tempdir().expect("a folder for the dashboard build");
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>dash</title>",
    )
    .expect("write index.html");
    std::fs::create_dir(web.path().join("assets")).expect("assets folder");
    std::fs::write(web.path().join("assets/app.js"), "console.log(1)").expect("write app.js");
    let dir = web.path().to_str().expect("a UTF-8 path");
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--web-dir", dir])
        .start()
        .await;
    let port = port(&cluster);

    let (head, body) = http1(port, &get("/"), &[]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert_eq!(body, b"<!doctype html><title>dash</title>");

    let (head, body) = http1(port, &get("/assets/app.js"), &[]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"console.log(1)");

    // Paths the dashboard routes in the browser get index.html.
    let (head, body) = http1(port, &navigate("/jobs/some-job"), &[]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"<!doctype html><title>dash</title>");

    // grpc-web without a token: refused by the auth layer, in grpc-web's own format.
    let (head, _) = http1(
        port,
        &grpc_web("/presswork.v1.JobService/ListJobs", None),
        &EMPTY_MESSAGE,
    )
    .await;
    assert!(
        head.contains("content-type: application/grpc-web"),
        "{head}"
    );
    assert!(head.contains("grpc-status: 16"), "{head}");

    // With a viewer's token it is served.
    let (head, body) = http1(
        port,
        &grpc_web(
            "/presswork.v1.AuthService/WhoAmI",
            Some(cluster.token("vera")),
        ),
        &EMPTY_MESSAGE,
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("grpc-status:"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("grpc-status:0"),
        "trailers in the body: {body:?}"
    );

    // An unknown method is UNIMPLEMENTED, not the dashboard's index.html.
    let (head, body) = http1(
        port,
        &grpc_web("/presswork.v1.Nothing/Here", Some(cluster.token("ada"))),
        &EMPTY_MESSAGE,
    )
    .await;
    assert!(head.contains("grpc-status: 12"), "{head}");
    assert!(body.is_empty());
}

#[tokio::test]
async fn without_a_dashboard_build_only_grpc_is_served() {
    let missing = tempfile::tempdir().expect("a temporary folder");
    let dir = missing.path().join("no-dist");
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--web-dir", dir.to_str().expect("a UTF-8 path")])
        .start()
        .await;
    let (head, body) = http1(port(&cluster), &get("/"), &[]).await;
    assert!(!head.contains("text/html"), "{head}");
    assert!(head.contains("grpc-status: 12"), "{head}");
    assert!(body.is_empty());
    // gRPC works: the cluster signed its users in over AuthService.Login.
    assert!(!cluster.token("ada").is_empty());
}

#[tokio::test]
async fn files_carry_security_headers_and_stay_inside_the_web_dir() {
    let web = tempfile::tempdir().expect("a folder for the dashboard build");
    let index = "<!doctype html><title>dash</title>";
    std::fs::write(web.path().join("index.html"), index).expect("write index.html");
    std::fs::create_dir(web.path().join("assets")).expect("assets folder");
    std::fs::write(web.path().join("assets/app.js"), "console.log(1)").expect("write app.js");
    let outside = tempfile::tempdir().expect("a folder outside the web dir");
    std::fs::write(outside.path().join("secret.txt"), "signing key").expect("write the secret");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        web.path().join("leak.txt"),
    )
    .expect("a symlink to a file outside");
    std::os::unix::fs::symlink(outside.path(), web.path().join("elsewhere"))
        .expect("a symlink to a folder outside");
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--web-dir", web.path().to_str().expect("a UTF-8 path")])
        .start()
        .await;
    let port = port(&cluster);

    for path in ["/", "/assets/app.js"] {
        let (head, _) = http1(port, &get(path), &[]).await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        for header in [
            "content-security-policy: default-src 'self'; script-src 'self';",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'self'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(header), "{path}: no {header:?} in\n{head}");
        }
    }

    // Not a file and not a browser's navigation: 404, not the dashboard.
    for request in [
        get("/metrics"),
        get("/jobs/some-job"),
        navigate("/missing.js"),
    ] {
        let (head, body) = http1(port, &request, &[]).await;
        assert!(head.starts_with("http/1.1 404"), "{request}: {head}");
        assert_ne!(body, index.as_bytes(), "{request}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    }

    // The icon a browser asks for by itself: no content, rather than a 404 in its console.
    let (head, _) = http1(port, &get("/favicon.ico"), &[]).await;
    assert!(head.starts_with("http/1.1 204"), "{head}");

    // Symlinks that lead out of the web dir are not followed.
    for path in ["/leak.txt", "/elsewhere/secret.txt"] {
        let (head, body) = http1(port, &get(path), &[]).await;
        assert!(head.starts_with("http/1.1 404"), "{path}: {head}");
        assert!(
            !String::from_utf8_lossy(&body).contains("signing key"),
            "{path} served a file outside the web dir"
        );
    }
    let (head, _) = http1(port, &get("/assets/../../etc/passwd"), &[]).await;
    assert!(!head.starts_with("http/1.1 200"), "{head}");

    // The dashboard's own routes still load it.
    let (head, body) = http1(port, &navigate("/jobs/abc"), &[]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert_eq!(body, index.as_bytes());
}
