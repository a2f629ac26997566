//! Bodies stream through both sidecars in both directions: 100 MB up and 100 MB down, while
//! each proxy's resident memory stays far below the body size.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::Empty;
use trustmesh_e2e::body::{count_body, GeneratedBody};
use trustmesh_e2e::client::{collect, connect, send_http1_on};
use trustmesh_e2e::mesh::Mesh;
use trustmesh_e2e::proxy::rss_kib;

const SIZE: u64 = 100 * 1024 * 1024;
/// Each proxy must stay under this resident size (KiB) while carrying 100 MB.
const RSS_LIMIT_KIB: u64 = 60 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

/// Samples a process's RSS every 50 ms until stopped; keeps the maximum.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicU64::new(0));
    let m = max.clone();
    let task = tokio::spawn(async move {
        // Bounded: at most TRANSFER_TIMEOUT worth of samples.
        for _ in 0..(TRANSFER_TIMEOUT.as_millis() / 50) * 2 {
            if let Ok(kib) = rss_kib(pid) {
                m.fetch_max(kib, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (max, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_100mb_body_with_bounded_memory() {
    let mut mesh = Mesh::a_to_b("stream").await.expect("mesh starts");
    let pid_a = mesh.a.process().pid().expect("A's pid");
    let pid_b = mesh.b.process().pid().expect("B's pid");
    let stop = Arc::new(AtomicBool::new(false));
    let (max_a, task_a) = sample_rss(pid_a, stop.clone());
    let (max_b, task_b) = sample_rss(pid_b, stop.clone());

    // Upload: generated in 64 KiB chunks, sent chunked (no length known up front).
    let req = Request::post("/upload")
        .header(http::header::HOST, "b.test")
        .body(GeneratedBody::chunked(SIZE))
        .expect("request");
    let upload = async {
        let resp = send_http1_on(connect(mesh.a.outbound()).await?, req).await?;
        collect(resp).await
    };
    let resp = tokio::time::timeout(TRANSFER_TIMEOUT, upload)
        .await
        .expect("the upload finishes in time")
        .expect("the upload succeeds");
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    let seen = resp.json().expect("JSON");
    assert_eq!(
        seen["body_bytes"], SIZE,
        "B's app must receive every byte: {seen}"
    );

    // Download: B's app streams 100 MB back; counted frame by frame, never held.
    let req = Request::get(format!("/stream/{SIZE}"))
        .header(http::header::HOST, "b.test")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let download = async {
        let resp = send_http1_on(connect(mesh.a.outbound()).await?, req).await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        Ok(count_body(resp.into_body()).await?)
    };
    let got = tokio::time::timeout(TRANSFER_TIMEOUT, download)
        .await
        .expect("the download finishes in time")
        .expect("the download succeeds");
    assert_eq!(got, SIZE, "A's app must receive every byte of the response");

    stop.store(true, Ordering::Relaxed);
    let _ = tokio::join!(task_a, task_b);
    let after_a = mesh.a.rss_kib().expect("A's RSS");
    let after_b = mesh.b.rss_kib().expect("B's RSS");
    let (max_a, max_b) = (max_a.load(Ordering::Relaxed), max_b.load(Ordering::Relaxed));
    eprintln!("RSS KiB: A max {max_a} after {after_a}; B max {max_b} after {after_b}");
    for (who, kib) in [
        ("A", max_a),
        ("B", max_b),
        ("A after", after_a),
        ("B after", after_b),
    ] {
        assert!(
            kib < RSS_LIMIT_KIB,
            "{who}: RSS {kib} KiB is over {RSS_LIMIT_KIB} KiB: the body was buffered"
        );
    }
    assert!(max_a > 0 && max_b > 0, "RSS was never sampled");
}
