//! The real-client suite, HTTP (curl, h2load, nghttp, requests, a raw HTTP/1.1 client) through
//! A → B to real servers (Python's http.server, HTTP/1.1 only; grpcio, h2c only), B's port
//! declared in the registry: an h2c client reaches an HTTP/1.1-only app and an HTTP/1.1
//! client an h2c-only one; a pooling client idle past the header timeout keeps its
//! connection; a denied `Expect: 100-continue` upload gets 403 and sends no body; trailers
//! pass both ways, declared or not, to HTTP/1.1 peers too; a body the app cuts short is cut
//! short for the client.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use trustmesh_e2e::mesh::{Mesh, MeshOptions};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::real::{client_in, text, RealMesh, Server, B_HOST};

/// The HTTP/1.1-only app, declared `http`, recording every request in `seen.jsonl`.
fn http1_app() -> Server<'static> {
    Server {
        args: vec!["http1_app.py", "--record", "seen.jsonl"],
        protocol: Some("http"),
        proto: None,
    }
}

/// What the HTTP/1.1 app recorded, one JSON value per request.
fn seen(real: &RealMesh) -> Vec<Value> {
    let text = std::fs::read_to_string(real.work().join("seen.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `curl -sS --connect-to b.test:80:<A outbound>` with `args`; its output.
async fn curl(real: &RealMesh, args: &[&str]) -> Output {
    let connect_to = real.connect_to();
    let mut all = vec!["-sS", "--max-time", "30", "--connect-to", &connect_to];
    all.extend_from_slice(args);
    real.run(Path::new("curl"), &all).await.unwrap()
}

fn json_line(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_client_reaches_an_http1_only_app() {
    let real = RealMesh::start("real-h2c-to-h1", http1_app(), MeshOptions::default())
        .await
        .expect("mesh and server start");
    let out = curl(
        &real,
        &["--http2-prior-knowledge", "http://b.test/echo?x=1"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let got = json_line(&out);
    assert_eq!(got["version"], "HTTP/1.1", "{got}");
    assert_eq!(got["path"], "/echo?x=1", "{got}");
    assert_eq!(
        got["headers"]["host"], B_HOST,
        "Host from :authority: {got}"
    );
    assert_eq!(
        got["headers"]["x-trustmesh-peer-identity"],
        spiffe_id("test", "a"),
        "{got}"
    );

    // h2load: 20 requests multiplexed over one h2c connection, each answered by the app.
    let url = format!("http://{}/h2load", real.outbound());
    let authority = format!(":authority: {B_HOST}");
    let args = ["-n", "20", "-c", "1", "-m", "10", "-H", &authority, &url];
    let out = real.run(Path::new("h2load"), &args).await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(report.contains("20 succeeded"), "{report}");
    assert!(report.contains("status codes: 20 2xx"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_reaches_an_h2c_only_app() {
    let server = Server {
        args: vec!["grpc_echo.py", "server"],
        protocol: Some("grpc"),
        proto: Some("echo.proto"),
    };
    let real = RealMesh::start("real-h1-to-h2c", server, MeshOptions::default())
        .await
        .expect("mesh and server start");
    let url = format!("http://{}/trustmesh.real.Echo/Unary", real.outbound());
    let out = real
        .client(
            "h1_grpc.py",
            &["--url", &url, "--host", B_HOST, "--text", "over-h1"],
        )
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let got = json_line(&out);
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["version"], 11, "the client spoke HTTP/1.1: {got}");
    assert_eq!(got["content_type"], "application/grpc", "{got}");
    let peer = spiffe_id("test", "a");
    assert_eq!(got["reply"], format!("over-h1|{peer}"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooling_session_idle_past_the_header_timeout_keeps_its_connection() {
    let flags = vec!["--header-timeout".to_string(), "1s".to_string()];
    let opts = MeshOptions {
        a_extra: flags.clone(),
        b_extra: flags,
        ..MeshOptions::default()
    };
    let real = RealMesh::start("real-pooling", http1_app(), opts)
        .await
        .expect("mesh and server start");
    let url = format!("http://{}/pooled", real.outbound());
    let out = real
        .client(
            "pooling.py",
            &["--url", &url, "--host", B_HOST, "--idle", "3"],
        )
        .await
        .unwrap();
    let got = json_line(&out);
    assert_eq!(got["error"], Value::Null, "{got}");
    assert_eq!(got["statuses"], serde_json::json!([200, 200]), "{got}");
    assert_eq!(got["connections"], 1, "one kept-alive connection: {got}");
}

/// A 2 MiB file to upload.
fn big_file(real: &RealMesh) -> PathBuf {
    let path = real.work().join("big.bin");
    std::fs::write(&path, vec![b'x'; 2 << 20]).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_expect_upload_gets_403_and_sends_no_body() {
    let opts = MeshOptions {
        policies: Some(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: no-denied, namespace: test}\n\
             spec:\n  selector: {matchLabels: {app: b}}\n  action: DENY\n  rules:\n\
             \x20 - to: [{operation: {paths: [\"/denied/*\"]}}]\n"
                .to_string(),
        ),
        ..MeshOptions::default()
    };
    let real = RealMesh::start("real-expect", http1_app(), opts)
        .await
        .expect("mesh and server start");
    let file = format!("@{}", big_file(&real).display());
    // curl waits for `100 Continue` (30 s here, so that only the mesh decides), then sends.
    let upload = |path: &'static str| {
        let file = file.clone();
        let real = &real;
        async move {
            let url = format!("http://b.test{path}");
            let args = [
                "-v",
                "--http1.1",
                "--expect100-timeout",
                "30",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                &file,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_upload}",
                &url,
            ];
            let out = curl(real, &args).await;
            assert!(out.status.success(), "{}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            (stdout, String::from_utf8_lossy(&out.stderr).to_string())
        }
    };

    let (result, verbose) = upload("/denied/upload").await;
    assert_eq!(
        result, "403 0",
        "refused, and curl sent no body byte: {verbose}"
    );
    assert!(!verbose.contains("100 Continue"), "{verbose}");
    assert!(
        seen(&real).iter().all(|r| r["path"] != "/denied/upload"),
        "the app got nothing: {:?}",
        seen(&real)
    );

    let (result, verbose) = upload("/allowed/upload").await;
    assert_eq!(result, format!("200 {}", 2 << 20), "{verbose}");
    assert!(verbose.contains("HTTP/1.1 100 Continue"), "{verbose}");
    // Once, with its body: the preflight never reaches the app.
    let got = seen(&real);
    let uploads: Vec<&Value> = got
        .iter()
        .filter(|r| r["path"] == "/allowed/upload")
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0]["body_bytes"], 2 << 20, "{}", uploads[0]);
}

/// Declared trailers, and undeclared ones to h2c clients (undeclared ones to HTTP/1.1 peers:
/// [`undeclared_trailers_reach_http1_peers`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways() {
    let real = RealMesh::start("real-trailers", http1_app(), MeshOptions::default())
        .await
        .expect("mesh and server start");
    let addr = real.outbound().to_string();
    // Declared HTTP/1.1 chunked request trailers reach the HTTP/1.1 app across the h2 hop.
    let path = "/echo/declared";
    let args = [
        "--addr",
        &addr,
        "--host",
        B_HOST,
        "--path",
        path,
        "--declare",
    ];
    let out = real.client("raw_h1.py", &args).await.unwrap();
    let response = json_line(&out)["response"].as_str().unwrap().to_string();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let got = seen(&real);
    let req = got.iter().find(|r| r["path"] == path).unwrap();
    assert_eq!(req["body_bytes"], 5, "{req}");
    assert_eq!(
        req["trailers"]["x-client-trailer"],
        serde_json::json!(["yes"]),
        "{req}"
    );
    // The app's chunked response trailers reach an h2c client declared or not, and an
    // HTTP/1.1 client (that sent `TE: trailers`) when declared.
    for path in ["/trailers", "/trailers?declared"] {
        let url = format!("http://{addr}{path}");
        let authority = format!(":authority: {B_HOST}");
        let out = real
            .run(Path::new("nghttp"), &["-v", "-H", &authority, &url])
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", text(&out));
        assert!(log.contains("x-app-trailer: done"), "h2c {path}: {log}");
    }
    let args = [
        "--addr",
        &addr,
        "--host",
        B_HOST,
        "--path",
        "/trailers?declared",
    ];
    let out = real.client("raw_h1.py", &args).await.unwrap();
    let response = json_line(&out)["response"].as_str().unwrap().to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(
        response.ends_with("\r\n5\r\nhello\r\n0\r\nx-app-trailer: done\r\n\r\n"),
        "{response:?}"
    );
}

/// Trailers no `Trailer:` header declared, to and from HTTP/1.1 peers that did not send
/// `TE: trailers`: without the mesh they arrive (the chunked grammar always allows a trailer
/// section), so they arrive through it (hyper as patched in `vendor/hyper.patch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_trailers_reach_http1_peers() {
    let real = RealMesh::start("real-trailers-h1", http1_app(), MeshOptions::default())
        .await
        .expect("mesh and server start");
    let addr = real.outbound().to_string();
    let app_trailer = "\r\n5\r\nhello\r\n0\r\nx-app-trailer: done\r\n\r\n";
    // The app's undeclared response trailer reaches curl (which sends no `TE`) as it was sent.
    let out = curl(&real, &["--http1.1", "--raw", "http://b.test/trailers"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let raw = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert_eq!(
        raw, "5\r\nhello\r\n0\r\nx-app-trailer: done\r\n\r\n",
        "curl --raw"
    );
    // And a raw client's, read byte for byte.
    let args = [
        "--addr",
        &addr,
        "--host",
        B_HOST,
        "--path",
        "/trailers",
        "--no-te",
    ];
    let out = real.client("raw_h1.py", &args).await.unwrap();
    let response = json_line(&out)["response"].as_str().unwrap().to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(!response.contains("\r\ntrailer:"), "{response:?}");
    assert!(response.ends_with(app_trailer), "{response:?}");

    // An HTTP/1.1 client's undeclared request trailer reaches the HTTP/1.1 app.
    let args = [
        "--addr", &addr, "--host", B_HOST, "--path", "/echo/h1", "--no-te",
    ];
    let out = real.client("raw_h1.py", &args).await.unwrap();
    let response = json_line(&out)["response"].as_str().unwrap().to_string();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // An h2c client's (nghttp's) request trailer reaches the HTTP/1.1 app too, its body sent
    // chunked. (With a `content-length` the HTTP/1.1 request has a fixed length, which has no
    // trailer section: RFC 9112 §6.5 puts trailers in the chunked coding only.)
    let body = real.work().join("five.txt");
    std::fs::write(&body, "hello").unwrap();
    let url = format!("http://{addr}/echo/h2c");
    let authority = format!(":authority: {B_HOST}");
    let data = body.to_str().unwrap();
    let nghttp = [
        "-H",
        &authority,
        "-d",
        data,
        "--no-content-length",
        "--trailer",
        "x-client-trailer: yes",
        &url,
    ];
    let out = real.run(Path::new("nghttp"), &nghttp).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let got = seen(&real);
    for path in ["/echo/h1", "/echo/h2c"] {
        let req = got.iter().find(|r| r["path"] == path).unwrap();
        assert_eq!(req["version"], "HTTP/1.1", "{req}");
        assert_eq!(req["body_bytes"], 5, "{req}");
        assert_eq!(
            req["trailers"]["x-client-trailer"],
            serde_json::json!(["yes"]),
            "{path}: {req}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_http1_request_trailers_reach_an_h2c_app() {
    // B's test app (it reports what it received, trailers too) declared `http2`: the inbound
    // sidecar speaks h2c to it, with the caller's Host as `:authority`.
    let opts = MeshOptions {
        b_app_protocol: Some("http2"),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("real-trailers-h2c", opts)
        .await
        .expect("mesh starts");
    let addr = mesh.a.outbound().to_string();
    let args = ["--addr", &addr, "--host", B_HOST, "--path", "/up"];
    let out = client_in(mesh.dir.path(), "raw_h1.py", &args)
        .await
        .unwrap();
    let response = json_line(&out)["response"].as_str().unwrap().to_string();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The app answers with what it read, trailers included.
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let req: Value = serde_json::from_str(body).unwrap();
    assert_eq!(req["version"], "HTTP/2.0", "{req}");
    assert_eq!(req["host"], B_HOST, ":authority from Host: {req}");
    assert_eq!(
        req["trailers"]["x-client-trailer"],
        serde_json::json!(["yes"]),
        "{req}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_app_cuts_short_is_cut_short_for_the_client() {
    let real = RealMesh::start("real-cut", http1_app(), MeshOptions::default())
        .await
        .expect("mesh and server start");
    // HTTP/1.1: the connection closes before the announced 1000 bytes (curl: exit 18,
    // "transfer closed with outstanding read data remaining").
    let args = [
        "--http1.1",
        "-o",
        "-",
        "-w",
        "\n%{size_download}",
        "http://b.test/cut",
    ];
    let out = curl(&real, &args).await;
    assert_eq!(out.status.code(), Some(18), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("0123456789"), "{}", text(&out));
    // h2c: the stream is reset, never ended as if complete (curl: exit 92, or 18 when the
    // short length is what it notices).
    let args = [
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "http://b.test/cut",
    ];
    let out = curl(&real, &args).await;
    let code = out.status.code();
    assert!(matches!(code, Some(92) | Some(18)), "{}", text(&out));
}
