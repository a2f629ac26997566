//! The load generator against an in-process backend.

use super::*;

async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::backend::accept_loop(listener));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_calls_the_hook_at_both_edges_of_the_window() {
    let target = Target {
        addr: backend().await,
        host: "backend".into(),
    };
    let mut edges = Vec::new();
    let mut hook = |e: Edge| {
        edges.push((e, Instant::now()));
        Ok(())
    };
    let (warmup, window) = (Duration::from_millis(100), Duration::from_millis(300));
    let called = Instant::now();
    let r = max_rate_hooked(&target, warmup, window, 1, &mut hook)
        .await
        .unwrap();
    assert_eq!(edges.len(), 2);
    assert_eq!((edges[0].0, edges[1].0), (Edge::Start, Edge::End));
    // Each edge comes no earlier than its place in the schedule. A loaded
    // machine may call either one late, so the gap between them is not bounded.
    assert!(edges[0].1 - called >= warmup);
    assert!(edges[1].1 - called >= warmup + window);
    assert!(r.completed > 0);
    assert_eq!(r.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_sends_exactly_the_scheduled_requests_of_the_window() {
    let target = Target {
        addr: backend().await,
        host: "backend".into(),
    };
    let mut edges = Vec::new();
    let mut hook = |e: Edge| {
        edges.push(e);
        Ok(())
    };
    let warmup = Duration::from_millis(200);
    let window = Duration::from_millis(500);
    let r = fixed_rate(&target, 200, warmup, window, 2, &mut hook)
        .await
        .unwrap();
    assert_eq!(edges, vec![Edge::Start, Edge::End]);
    // 200 rps for 0.5 s: 100 requests scheduled inside the window, none failed.
    assert_eq!(r.completed + r.errors, 100);
    assert_eq!(r.errors, 0);
    assert_eq!(r.latency.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_counts_completions_and_refused_connections_fail() {
    let target = Target {
        addr: backend().await,
        host: "backend".into(),
    };
    let r = max_rate(
        &target,
        Duration::from_millis(50),
        Duration::from_millis(300),
        4,
    )
    .await
    .unwrap();
    assert!(r.completed > 0);
    assert_eq!(r.errors, 0);

    // Nothing listens on a port that was just released: connecting fails up front.
    let closed = crate::procs::free_addrs(1).unwrap()[0];
    let target = Target {
        addr: closed,
        host: "x".into(),
    };
    assert!(
        max_rate(&target, Duration::ZERO, Duration::from_millis(100), 1)
            .await
            .is_err()
    );
}
