//! OTLP/HTTP span export: with `--otlp-endpoint`, each sidecar hop is a span sent as protobuf
//! to `/v1/traces`; this test runs its own small OTLP/HTTP receiver, decodes what arrives with
//! the OpenTelemetry protocol types, and checks trace ids, kinds and parentage.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tokio::net::TcpListener;
use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;

/// One received span with the service that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    status_code: Option<i64>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A minimal OTLP/HTTP receiver on 127.0.0.1: decodes every POST to /v1/traces.
async fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let msg = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for rs in msg.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| kv.value.as_ref()?.value.clone())
                                .map(|v| match v {
                                    any_value::Value::StringValue(s) => s,
                                    other => format!("{other:?}"),
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    let status_code = s
                                        .attributes
                                        .iter()
                                        .find(|kv| kv.key == "http.response.status_code")
                                        .and_then(|kv| match kv.value.as_ref()?.value {
                                            Some(any_value::Value::IntValue(i)) => Some(i),
                                            _ => None,
                                        });
                                    store.lock().unwrap().push(Got {
                                        service: service.clone(),
                                        name: s.name.clone(),
                                        kind: s.kind,
                                        trace_id: hex(&s.trace_id),
                                        span_id: hex(&s.span_id),
                                        parent: hex(&s.parent_span_id),
                                        status_code,
                                    });
                                }
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, got)
}

async fn wait_spans(got: &Arc<Mutex<Vec<Got>>>, trace: &str, n: usize) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans: Vec<Got> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect();
        if spans.len() >= n || Instant::now() >= deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hop_is_an_otlp_span() {
    let (url, got) = receiver().await;
    let opts = MeshOptions {
        b_extra: vec!["--otlp-endpoint".into(), url.clone()],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("otlp", opts).await.expect("mesh starts");
    let id_c = spiffe_id(NAMESPACE, "c");
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &id_c,
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &["--otlp-endpoint", &url],
    )
    .await
    .expect("C starts");

    // No traceparent: C starts the trace, and its span is the root the callee hangs under.
    let resp = http1_get(c.outbound(), "b.test", "/otlp", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let tp = resp.json().unwrap()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[3], "01", "exported traces are sampled: {tp}");
    let spans = wait_spans(&got, parts[1], 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("C's span");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("B's span");
    assert_eq!(client.service, id_c);
    assert_eq!(server.service, spiffe_id(NAMESPACE, "b"));
    assert_eq!(client.parent, "", "C's span is the root");
    assert_eq!(client.span_id, parts[2], "the parent id B saw is C's span");
    assert_eq!(server.parent, client.span_id);
    assert_ne!(server.span_id, client.span_id);
    assert_eq!(server.name, "inbound GET");
    assert_eq!(client.name, "outbound GET");
    assert_eq!(server.status_code, Some(200));

    // The app's own trace: both hops are children of the app's span.
    let app_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = http1_get(c.outbound(), "b.test", "/otlp2", &[("traceparent", app_tp)])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let spans = wait_spans(&got, "0af7651916cd43dd8448eb211c80319c", 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(
        spans.iter().all(|s| s.parent == "b7ad6b7169203331"),
        "{spans:?}"
    );
}
