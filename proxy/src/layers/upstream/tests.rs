//! The HTTP/1.1 client to the app ([`AppHttp1`]) against apps on real loopback sockets, which
//! count the connections they accept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::layers::body;
use crate::layers::idle::Limits;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP/1.1 app (hyper's server) answering `path` with the path as the body and
/// the number of the connection it came on (from 1) in `x-conn`; requests for `/together` are
/// answered, with no body, only once `group` of them have arrived (they wait at one barrier).
async fn app(group: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepts = Arc::new(AtomicUsize::new(0));
    let counted = accepts.clone();
    let barrier = Arc::new(tokio::sync::Barrier::new(group));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let barrier = barrier.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let barrier = barrier.clone();
                async move {
                    let mut text = req.uri().path().to_string();
                    if text == "/together" {
                        barrier.wait().await;
                        text.clear();
                    }
                    let mut resp = Response::new(Full::new(Bytes::from(text)));
                    resp.headers_mut().insert("x-conn", n.into());
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, accepts)
}

/// What [`scripted_app`] does with a request it has read.
enum Then {
    /// Writes these bytes and waits for the next request.
    Answer(String),
    /// Writes these bytes and closes the connection.
    AnswerAndClose(String),
    /// Closes the connection without an answer.
    Close,
}

/// A keep-alive `200 ok` of connection `n` (in `x-conn`), saying nothing of closing.
fn ok(n: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nx-conn: {n}\r\ncontent-length: 2\r\n\r\nok")
}

/// An app written on a bare socket, doing `script(connection, request, request line)`
/// (numbered from 1) with each request head it reads. Counts connections and requests.
async fn scripted_app(
    script: fn(usize, usize, &str) -> Then,
) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (accepts, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, r) = (accepts.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let n = a.fetch_add(1, Ordering::SeqCst) + 1;
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for k in 1.. {
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break Some(i + 4);
                        }
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(got) => buf.extend_from_slice(&chunk[..got]),
                        }
                    };
                    let Some(end) = end else { return };
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let head = String::from_utf8_lossy(&head);
                    r.fetch_add(1, Ordering::SeqCst);
                    match script(n, k, head.lines().next().unwrap_or_default()) {
                        Then::Answer(bytes) => {
                            let _ = tcp.write_all(bytes.as_bytes()).await;
                        }
                        Then::AnswerAndClose(bytes) => {
                            let _ = tcp.write_all(bytes.as_bytes()).await;
                            return;
                        }
                        Then::Close => return,
                    }
                }
            });
        }
    });
    (addr, accepts, requests)
}

fn get(path: &str) -> Request<Body> {
    let mut req = Request::new(body::full(""));
    *req.uri_mut() = Uri::try_from(path).unwrap();
    req.headers_mut()
        .insert(header::HOST, http::HeaderValue::from_static("app"));
    req
}

fn post(path: &str) -> Request<Body> {
    let mut req = get(path);
    *req.method_mut() = http::Method::POST;
    *req.body_mut() = body::full("payload");
    req
}

/// Sends `req` to the app at `addr` and reads the whole answer: `BODY conn X-CONN`.
async fn exchange(pool: &AppHttp1, addr: &str, req: Request<Body>) -> Result<String, ProxyError> {
    let resp = send_http1(pool, addr, req, "the app", TIMEOUT).await?;
    let conn = resp.headers()["x-conn"].to_str().unwrap().to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(format!("{} conn {conn}", String::from_utf8_lossy(&body)))
}

#[tokio::test]
async fn sequential_requests_share_one_connection_to_the_app() {
    let (addr, accepts) = app(2).await;
    let pool = AppHttp1::new(TIMEOUT);
    for path in ["/a", "/b", "/c"] {
        let body = exchange(&pool, &addr, get(path)).await.unwrap();
        assert_eq!(body, format!("{path} conn 1"));
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_requests_each_get_a_connection_of_their_own() {
    // Neither is answered before both have arrived: on one HTTP/1.1 connection the second
    // could not arrive, and both would time out.
    let (addr, accepts) = app(2).await;
    let pool = AppHttp1::new(TIMEOUT);
    let (a, b) = tokio::join!(
        exchange(&pool, &addr, get("/together")),
        exchange(&pool, &addr, get("/together"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a, b);
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
    // Both are kept, and carry the next pair without a new connection.
    let (a, b) = tokio::join!(
        exchange(&pool, &addr, get("/together")),
        exchange(&pool, &addr, get("/together"))
    );
    assert_ne!(a.unwrap(), b.unwrap());
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_app_closed_while_idle_never_fails_a_request() {
    // Every connection carries one exchange, then the app closes it without saying so: each
    // next request meets a pooled connection that is closed, or closing under it.
    let (addr, accepts, _) = scripted_app(|n, _, _| Then::AnswerAndClose(ok(n))).await;
    let pool = AppHttp1::new(TIMEOUT);
    for i in 1..=20 {
        let body = exchange(&pool, &addr, get("/x")).await;
        assert_eq!(body.unwrap(), format!("ok conn {i}"));
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_bodiless_get_lost_on_a_connection_idle_long_enough_is_sent_again_and_a_post_never() {
    // Connection 1 answers its first request and closes on the second one unanswered (as an
    // app closing an idle connection the moment the request arrives); the others answer.
    let script = |conn, req, _: &str| match (conn, req) {
        (1, 2) => Then::Close,
        _ => Then::Answer(ok(conn)),
    };
    let (addr, accepts, requests) = scripted_app(script).await;
    // Kept to send again however briefly the connection was idle.
    let limits = Limits {
        max_idle: 8,
        idle_timeout: AppHttp1::IDLE_TIMEOUT,
    };
    let pool = AppHttp1::with_limits(TIMEOUT, limits, Duration::ZERO);
    assert_eq!(
        exchange(&pool, &addr, get("/x")).await.unwrap(),
        "ok conn 1"
    );
    assert_eq!(
        exchange(&pool, &addr, get("/x")).await.unwrap(),
        "ok conn 2"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert_eq!(accepts.load(Ordering::SeqCst), 2);

    // A request with a body may have been acted on: it is not sent twice.
    let (addr, accepts, requests) = scripted_app(script).await;
    assert_eq!(
        exchange(&pool, &addr, get("/x")).await.unwrap(),
        "ok conn 1"
    );
    let e = exchange(&pool, &addr, post("/x")).await.unwrap_err();
    assert!(matches!(e, ProxyError::Upstream { .. }), "{e:?}");
    assert_eq!(e.status(), 502);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert_eq!(accepts.load(Ordering::SeqCst), 1);

    // A connection idle for less than `replay_after` is no app's keep-alive timeout firing:
    // nothing is kept, and a GET lost on it is the app's failure, sent once.
    let (addr, accepts, requests) = scripted_app(script).await;
    let pool = AppHttp1::with_limits(TIMEOUT, limits, Duration::from_secs(3600));
    assert_eq!(
        exchange(&pool, &addr, get("/x")).await.unwrap(),
        "ok conn 1"
    );
    let e = exchange(&pool, &addr, get("/x")).await.unwrap_err();
    assert_eq!(e.status(), 502);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_connections_are_bounded_in_number_and_in_idle_time() {
    let (addr, accepts) = app(3).await;
    let one = Limits {
        max_idle: 1,
        idle_timeout: Duration::from_secs(60),
    };
    let pool = AppHttp1::with_limits(TIMEOUT, one, AppHttp1::REPLAY_AFTER);
    let three = || async {
        let (a, b, c) = tokio::join!(
            exchange(&pool, &addr, get("/together")),
            exchange(&pool, &addr, get("/together")),
            exchange(&pool, &addr, get("/together"))
        );
        (a.unwrap(), b.unwrap(), c.unwrap())
    };
    three().await;
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
    // Their answers have no body, so each is idle once given back: each one given back closes
    // the oldest idle one beyond the bound, and one is left for the next three.
    assert_eq!(pool.held(&addr), 1);
    exchange(&pool, &addr, get("/a")).await.unwrap();
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
    three().await;
    assert_eq!(accepts.load(Ordering::SeqCst), 5);

    let expired = Limits {
        max_idle: 8,
        idle_timeout: Duration::ZERO,
    };
    let pool = AppHttp1::with_limits(TIMEOUT, expired, AppHttp1::REPLAY_AFTER);
    let (addr, accepts) = app(2).await;
    exchange(&pool, &addr, get("/a")).await.unwrap();
    std::thread::sleep(Duration::from_millis(2));
    exchange(&pool, &addr, get("/b")).await.unwrap();
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_app_that_refuses_or_never_answers_is_a_502_or_a_504() {
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let pool = AppHttp1::new(TIMEOUT);
    let e = exchange(&pool, &addr, get("/x")).await.unwrap_err();
    assert!(matches!(e, ProxyError::Connect { .. }), "{e:?}");
    assert_eq!(e.status(), 502);

    // Accepts, reads, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let _held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            conns.push(tcp);
        }
    });
    let resp = send_http1(
        &pool,
        &addr,
        get("/x"),
        "the app",
        Duration::from_millis(200),
    )
    .await;
    let e = resp.map(|_| ()).unwrap_err();
    assert!(matches!(e, ProxyError::Timeout { .. }), "{e:?}");
    assert_eq!(e.status(), 504);
}

mod shapes;
