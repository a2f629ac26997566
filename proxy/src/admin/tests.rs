//! The admin listener built from its config and a sidecar's state, on a loopback listener:
//! no process, no flags.

use super::{serve, Config};
use crate::net::nofile::OpenFiles;
use crate::testing::{self, get, read};

#[tokio::test]
async fn reports_its_config_and_readiness() {
    let ca = testing::ca();
    let app = "127.0.0.1:8080".parse().unwrap();
    let args = testing::args("api", app);
    let open_files = OpenFiles {
        soft: 4096,
        hard: 8192,
    };
    let mut config = Config::from_args(&args, Some(open_files));
    config.inbound = "0.0.0.0:16006".parse().unwrap();
    let shared = testing::shared(&ca, args, Vec::new(), serde_json::json!([]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, shared, config));
    let call = |req| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut client = testing::h1_client(tcp).await;
        read(client.send_request(req).await.unwrap()).await
    };

    let (status, headers, body) = call(get("/config", &[])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["identity"], testing::id("api").as_str());
    assert_eq!(v["control_plane"], "https://127.0.0.1:1/");
    assert_eq!(v["app"], "127.0.0.1:8080");
    assert_eq!(v["listeners"]["inbound"], "0.0.0.0:16006");
    assert_eq!(v["listeners"]["outbound"], "127.0.0.1:15001");
    assert_eq!(v["listeners"]["admin"], "127.0.0.1:15000");
    assert_eq!(v["open_files_limit"], 4096);
    assert_eq!(v["open_files_limit_hard"], 8192);
    assert_eq!(v["snapshot_version"], "test");
    assert_eq!(v["certificate"], serde_json::Value::Null);
    assert_eq!(v["ready"], false);

    // A snapshot but no certificate yet: alive, not ready.
    let (status, _, body) = call(get("/ready", &[])).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (503, "not ready: no certificate yet\n")
    );
    let (status, _, body) = call(get("/live", &[])).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "live\n"));
    let (status, _, _) = call(get("/nothing", &[])).await;
    assert_eq!(status, 404);
    let mut post = get("/live", &[]);
    *post.method_mut() = http::Method::POST;
    let (status, _, _) = call(post).await;
    assert_eq!(status, 405);
}
