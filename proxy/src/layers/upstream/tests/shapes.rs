//! Answers of every shape an HTTP/1.1 app gives reach the caller as they were, and the
//! connection is kept, or not, as the app said.

use super::*;

/// The app's answer to `GET /<shape>` (or `HEAD`), on connection `n`; `/ok` is a plain one.
fn shape(n: usize, _: usize, line: &str) -> Then {
    let path = line.split(' ').nth(1).unwrap_or_default();
    let head =
        |status: &str, fields: &str| format!("HTTP/1.1 {status}\r\nx-conn: {n}\r\n{fields}\r\n");
    match path {
        // HEAD: the length of the body a GET would get, and no body.
        "/head" => Then::Answer(head("200 OK", "content-length: 5\r\n")),
        "/204" => Then::Answer(head("204 No Content", "")),
        "/304" => Then::Answer(head("304 Not Modified", "etag: \"x\"\r\n")),
        // Informational answers before the final one (RFC 9110 §15.2).
        "/1xx" => Then::Answer(format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n{}ok",
            head("200 OK", "content-length: 2\r\n")
        )),
        "/chunked" => Then::Answer(format!(
            "{}2\r\nok\r\n0\r\nx-app-trailer: done\r\n\r\n",
            head("200 OK", "transfer-encoding: chunked\r\n")
        )),
        "/close" => Then::AnswerAndClose(format!(
            "{}ok",
            head("200 OK", "connection: close\r\ncontent-length: 2\r\n")
        )),
        "/http10" => Then::AnswerAndClose(format!(
            "HTTP/1.0 200 OK\r\nx-conn: {n}\r\ncontent-length: 2\r\n\r\nok"
        )),
        // HTTP/1.0 with a body that ends where the connection does.
        "/http10-eof" => Then::AnswerAndClose(format!("HTTP/1.0 200 OK\r\nx-conn: {n}\r\n\r\nok")),
        _ => Then::Answer(ok(n)),
    }
}

#[tokio::test]
async fn every_answer_shape_reaches_the_caller_and_keeps_the_connection_as_the_app_said() {
    let (addr, _, _) = scripted_app(shape).await;
    let pool = AppHttp1::new(TIMEOUT);
    // (method, path, status, body, trailer, the connection kept for the next request)
    let table = [
        ("HEAD", "/head", 200, "", None, true),
        ("GET", "/204", 204, "", None, true),
        ("GET", "/304", 304, "", None, true),
        ("GET", "/1xx", 200, "ok", None, true),
        ("GET", "/chunked", 200, "ok", Some("done"), true),
        ("GET", "/close", 200, "ok", None, false),
        ("GET", "/http10", 200, "ok", None, false),
        ("GET", "/http10-eof", 200, "ok", None, false),
    ];
    for (method, path, status, body, trailer, kept) in table {
        let mut req = get(path);
        *req.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = send_http1(&pool, &addr, req, "the app", TIMEOUT)
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let conn = resp.headers()["x-conn"].to_str().unwrap().to_string();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        assert_eq!(&collected.to_bytes()[..], body.as_bytes(), "{path}");
        let got = trailers.as_ref().and_then(|t| t.get("x-app-trailer"));
        assert_eq!(got.map(|v| v.to_str().unwrap()), trailer, "{path}");
        // The next request: on the same connection when the app kept it, else on a new one,
        // and never an error.
        let next = exchange(&pool, &addr, get("/ok")).await.unwrap();
        let same = next == format!("ok conn {conn}");
        assert_eq!(same, kept, "{path}: then {next}, after conn {conn}");
    }
}
