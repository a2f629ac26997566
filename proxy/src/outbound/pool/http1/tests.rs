use super::*;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

/// An HTTP/1.1 connection over an in-memory pipe to a server whose response bodies stream
/// until the returned sender of each request is dropped (`bodies`); aborting the server task
/// closes the connection.
async fn h1_pair() -> (
    SendRequest<Body>,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (bodies_tx, bodies) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |_req| {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let _ = bodies_tx.send(done_tx);
            async move {
                let frames = futures_util::stream::once(async move {
                    let _ = done_rx.await;
                    Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(
                        b"done",
                    )))
                });
                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                    http_body_util::StreamBody::new(frames),
                ))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), svc)
            .await;
    });
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, server, bodies)
}

fn config() -> Arc<rustls::ClientConfig> {
    let td = trustmesh_certs::TrustDomain::parse("cluster.local").unwrap();
    let ca =
        trustmesh_certs::CertificateAuthority::generate(&td, std::time::SystemTime::now()).unwrap();
    let bundle = trustmesh_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
    Arc::new(
        trustmesh_certs::tls::sidecar_client_config(
            &bundle,
            Arc::new(trustmesh_certs::RotatingResolver::new()),
            id(),
        )
        .unwrap(),
    )
}

fn id() -> SpiffeId {
    SpiffeId::parse("spiffe://cluster.local/ns/t/sa/b").unwrap()
}

fn pool(max_idle: usize, idle_timeout: Duration) -> Http1Pool {
    let counter = |n: &str| prometheus::IntCounter::new(n, n).unwrap();
    Http1Pool::new(
        Limits {
            max_idle,
            idle_timeout,
        },
        counter("connects"),
        counter("http1_connects"),
    )
}

const EP: &str = "10.0.0.1:15006";

fn taken(sender: SendRequest<Body>, config: &Arc<rustls::ClientConfig>) -> Taken {
    Taken {
        sender,
        config: config.clone(),
        reused: false,
    }
}

/// Lets the connection tasks run until `done` holds (bounded in turns, not in time).
async fn until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

fn get() -> Request<Body> {
    Request::new(crate::layers::body::full(""))
}

use http::Request;

#[tokio::test]
async fn a_connection_is_taken_again_once_its_response_is_read_and_never_while_busy() {
    let (pool, config) = (pool(4, Duration::from_secs(60)), config());
    let (mut sender, _server, mut bodies) = h1_pair().await;
    let resp = sender.try_send_request(get()).await.unwrap();
    pool.give_back(EP, &id(), taken(sender, &config));
    let finish = bodies.recv().await.unwrap();
    // The response body is still streaming: the connection is not free.
    assert!(pool.idle(EP, &id(), &config).is_none());
    assert_eq!(pool.held(EP), 1);
    let _ = finish.send(());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"done");
    let mut again = None;
    assert!(
        until(|| {
            again = pool.idle(EP, &id(), &config);
            again.is_some()
        })
        .await
    );
    let mut again = again.unwrap();
    assert!(again.reused());
    // And it carries the next request.
    let second = again.sender().try_send_request(get());
    let finish = bodies.recv().await.unwrap();
    let _ = finish.send(());
    assert_eq!(second.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_connection_the_peer_closed_while_idle_is_dropped_not_taken() {
    let (pool, config) = (pool(4, Duration::from_secs(60)), config());
    let (sender, server, _bodies) = h1_pair().await;
    assert!(until(|| sender.is_ready()).await);
    pool.give_back(EP, &id(), taken(sender, &config));
    assert_eq!(pool.held(EP), 1);
    server.abort();
    let _ = server.await;
    let all_closed = || {
        let conns = pool.conns.lock().unwrap();
        let closed = conns[&id()][EP].iter().all(|c| c.sender.is_closed());
        closed
    };
    let closed = all_closed() || until(all_closed).await;
    assert!(closed);
    assert!(pool.idle(EP, &id(), &config).is_none());
    assert_eq!(pool.held(EP), 0);
}

#[tokio::test]
async fn a_connection_idle_too_long_or_of_an_old_trust_bundle_is_not_taken() {
    let (pool, config) = (pool(4, Duration::ZERO), config());
    let (sender, _server, _bodies) = h1_pair().await;
    assert!(until(|| sender.is_ready()).await);
    pool.give_back(EP, &id(), taken(sender, &config));
    std::thread::sleep(Duration::from_millis(2));
    assert!(pool.idle(EP, &id(), &config).is_none());
    assert_eq!(pool.held(EP), 0);

    let pool = self::pool(4, Duration::from_secs(60));
    let (sender, _server, _bodies) = h1_pair().await;
    assert!(until(|| sender.is_ready()).await);
    pool.give_back(EP, &id(), taken(sender, &config));
    let replaced = self::config();
    assert!(pool.idle(EP, &id(), &replaced).is_none());
    assert_eq!(pool.held(EP), 0);
}

#[tokio::test]
async fn at_most_max_idle_idle_connections_are_kept_per_endpoint() {
    let (pool, config) = (pool(2, Duration::from_secs(60)), config());
    let mut servers = Vec::new();
    for _ in 0..3 {
        let (sender, server, bodies) = h1_pair().await;
        assert!(until(|| sender.is_ready()).await);
        pool.give_back(EP, &id(), taken(sender, &config));
        servers.push((server, bodies));
    }
    assert_eq!(pool.held(EP), 2);
    // A busy connection given back does not count against idle ones.
    let (mut sender, _server, mut bodies) = h1_pair().await;
    let _resp = sender.try_send_request(get()).await.unwrap();
    let _finish = bodies.recv().await.unwrap();
    pool.give_back(EP, &id(), taken(sender, &config));
    assert_eq!(pool.held(EP), 3);
}
