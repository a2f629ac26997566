//! The accept loop both listeners share: accept until the drain begins, hold each connection
//! to `--max-connections` (one over it is closed at once and counted), and hand it, with its
//! drain watcher, to the listener's own connection handler on a task of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::layers::limits;
use crate::observe::metrics::Metrics;
use trustmesh_runtime::Drain;

/// Runs until the drain begins.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    drain: &Drain,
    metrics: &Metrics,
    conns: Arc<Semaphore>,
    direction: &'static str,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = drain.started() => return,
        };
        let Some(watcher) = drain.watcher() else {
            return;
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(direction, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            limits::exceeded(metrics, "connections", direction);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let connection = serve(tcp, addr, watcher);
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
}
