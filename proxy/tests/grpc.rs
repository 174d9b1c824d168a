//! End to end: gRPC through weir — a small tonic server (in this test) behind a route with
//! `backend-protocol: h2c`, a tonic client in front: unary calls, a server-streaming call
//! whose trailers (grpc-status) must arrive, an error status, and a cancelled call.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use futures::future::BoxFuture;
use futures::StreamExt;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use support::{ManifestDir, Weir};
use tonic::codec::ProstCodec;
use tonic::{Code, Request, Response, Status};

#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
    /// Replies a stream call sends.
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(uint32, tag = "2")]
    index: u32,
}

const UNARY: &str = "/weir.test.Echo/Unary";
const STREAM: &str = "/weir.test.Echo/Stream";

/// Unary: echoes the message; "fail" answers NOT_FOUND.
struct Unary;

impl tonic::server::UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<'static, Result<Response<EchoReply>, Status>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let message = request.into_inner().message;
            if message == "fail" {
                return Err(Status::not_found("no such echo"));
            }
            Ok(Response::new(EchoReply { message, index: 0 }))
        })
    }
}

/// Server streaming: `count` replies, 20 ms apart.
struct Stream;

type ReplyStream = Pin<Box<dyn futures::Stream<Item = Result<EchoReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<EchoRequest> for Stream {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<'static, Result<Response<ReplyStream>, Status>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let EchoRequest { message, count } = request.into_inner();
            // Dropped with the reply stream: when the call ends or is cancelled.
            let watch = (message == "endless").then(|| DropFlag(&ENDLESS_STREAM_DROPPED));
            let replies = futures::stream::iter(0..count).then(move |index| {
                let _watch = &watch;
                let message = message.clone();
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Ok(EchoReply { message, index })
                }
            });
            Ok(Response::new(Box::pin(replies) as ReplyStream))
        })
    }
}

/// Set when the server drops the reply stream of the "endless" call.
static ENDLESS_STREAM_DROPPED: AtomicBool = AtomicBool::new(false);

struct DropFlag(&'static AtomicBool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the tonic server on its own runtime thread (h2c, as gRPC without TLS is).
fn start_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    support::serve_connections(listener, |stream| async move {
        let service =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                // gRPC over HTTP/2 requires `te: trailers`, and some servers (gRPC's C core)
                // refuse requests without it: weir must pass it on.
                let te = req.headers().get("te").map(|v| v.as_bytes().to_vec());
                let response = match req.uri().path() {
                    _ if te.as_deref() != Some(b"trailers".as_slice()) => {
                        Status::failed_precondition("te: trailers missing").into_http()
                    }
                    UNARY => {
                        tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default())
                            .unary(Unary, req)
                            .await
                    }
                    STREAM => {
                        tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default())
                            .server_streaming(Stream, req)
                            .await
                    }
                    _ => Status::unimplemented("no such method").into_http(),
                };
                Ok::<_, Infallible>(response)
            });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    addr
}

fn manifests(server: SocketAddr) -> String {
    support::service_yaml("demo", "grpc", &[server])
        + "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: grpc\n  namespace: demo\n  annotations: {weir.dev/backend-protocol: h2c}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: grpc.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: grpc, port: {name: http}}}}]}\n"
}

#[test]
fn grpc_unary_streaming_and_errors_pass_through_weir() {
    let server = start_server();
    let dir = ManifestDir::new();
    dir.write("all.yaml", &manifests(server));
    let weir = Weir::start(&dir.path(), &[]);
    let url = weir.url("");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // h2c to weir with the route's host as :authority.
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("endpoint")
            .origin("http://grpc.example.com".parse().expect("origin"))
            .connect()
            .await
            .expect("connect to weir");
        let mut grpc = tonic::client::Grpc::new(channel);

        for i in 0..10 {
            grpc.ready().await.expect("ready");
            let reply: Response<EchoReply> = grpc
                .unary(
                    Request::new(EchoRequest {
                        message: format!("hello {i}"),
                        count: 0,
                    }),
                    PathAndQuery::from_static(UNARY),
                    ProstCodec::default(),
                )
                .await
                .expect("unary call");
            assert_eq!(reply.into_inner().message, format!("hello {i}"));
        }

        // Server streaming: every message, then the trailers with grpc-status 0 (a stream
        // without them ends in an error on the client).
        grpc.ready().await.expect("ready");
        let response: Response<tonic::codec::Streaming<EchoReply>> = grpc
            .server_streaming(
                Request::new(EchoRequest {
                    message: "tick".into(),
                    count: 5,
                }),
                PathAndQuery::from_static(STREAM),
                ProstCodec::default(),
            )
            .await
            .expect("stream call");
        let mut stream = response.into_inner();
        let mut indexes = Vec::new();
        while let Some(reply) = stream.message().await.expect("stream message or clean end") {
            assert_eq!(reply.message, "tick");
            indexes.push(reply.index);
        }
        assert_eq!(indexes, [0, 1, 2, 3, 4]);
        let trailers = stream.trailers().await.expect("trailers");
        assert!(
            trailers.is_some(),
            "the stream's trailers reached the client"
        );

        // An error status from the server reaches the client unchanged.
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<_, EchoReply, _>(
                Request::new(EchoRequest {
                    message: "fail".into(),
                    count: 0,
                }),
                PathAndQuery::from_static(UNARY),
                ProstCodec::default(),
            )
            .await
            .expect_err("NOT_FOUND");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such echo");

        // A client that cancels a streaming call cancels it on the server: weir resets the
        // upstream stream rather than reading replies nobody wants.
        grpc.ready().await.expect("ready");
        let response: Response<tonic::codec::Streaming<EchoReply>> = grpc
            .server_streaming(
                Request::new(EchoRequest {
                    message: "endless".into(),
                    count: 100_000,
                }),
                PathAndQuery::from_static(STREAM),
                ProstCodec::default(),
            )
            .await
            .expect("stream call");
        let mut stream = response.into_inner();
        for _ in 0..2 {
            stream.message().await.expect("message").expect("not ended");
        }
        assert!(!ENDLESS_STREAM_DROPPED.load(Ordering::SeqCst));
        drop(stream);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !ENDLESS_STREAM_DROPPED.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server still streams 5 s after the client cancelled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    // 13 calls, each logged as an h2 request to the gRPC upstream.
    let log = weir.access_log_of(13);
    assert!(
        log.iter()
            .all(|l| l["upstream"] == server.to_string() && l["status"] == 200),
        "{log:?}"
    );
}

/// A GRPCRoute (Gateway API) to two gRPC servers: the Unary method by an exact service and
/// method match, the service's other methods with a header to the second server; a call no
/// rule matches is refused; the backends are reached over h2c without an annotation.
#[test]
fn grpcroutes_match_services_methods_and_headers() {
    let first = start_server();
    let second = start_server();
    let dir = ManifestDir::new();
    dir.write(
        "all.yaml",
        &(support::service_yaml("demo", "first", &[first])
            + &support::service_yaml("demo", "second", &[second])
            + &support::weir_gateway("demo", "[{name: http, port: 80, protocol: HTTP}]")
            + r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: demo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: weir.test.Echo, method: Unary}}]
    backendRefs: [{name: first, port: 80}]
  - matches: [{method: {service: weir.test.Echo}, headers: [{name: x-lane, value: canary}]}]
    backendRefs: [{name: second, port: 80}]
"#),
    );
    let weir = Weir::start(&dir.path(), &[]);
    let url = weir.url("");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("endpoint")
            .origin("http://grpc.example.com".parse().expect("origin"))
            .connect()
            .await
            .expect("connect to weir");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let reply: Response<EchoReply> = grpc
            .unary(
                Request::new(EchoRequest {
                    message: "exact".into(),
                    count: 0,
                }),
                PathAndQuery::from_static(UNARY),
                ProstCodec::default(),
            )
            .await
            .expect("unary call");
        assert_eq!(reply.into_inner().message, "exact");
        let stream_call = |lane: Option<&'static str>| {
            let mut request = Request::new(EchoRequest {
                message: "tick".into(),
                count: 2,
            });
            if let Some(lane) = lane {
                request
                    .metadata_mut()
                    .insert("x-lane", lane.parse().expect("metadata"));
            }
            request
        };
        grpc.ready().await.expect("ready");
        let response: Response<tonic::codec::Streaming<EchoReply>> = grpc
            .server_streaming(
                stream_call(Some("canary")),
                PathAndQuery::from_static(STREAM),
                ProstCodec::default(),
            )
            .await
            .expect("stream call with the header");
        let mut stream = response.into_inner();
        let mut replies = 0;
        while let Some(reply) = stream.message().await.expect("message") {
            assert_eq!(reply.message, "tick");
            replies += 1;
        }
        assert_eq!(replies, 2);
        // No rule takes the stream without the header.
        grpc.ready().await.expect("ready");
        let refused = grpc
            .server_streaming::<_, EchoReply, _>(
                stream_call(None),
                PathAndQuery::from_static(STREAM),
                ProstCodec::default(),
            )
            .await;
        // Refused in the head, or (tonic reads an HTTP error as the stream's) at once after.
        let refused = match refused {
            Err(_) => true,
            Ok(response) => response.into_inner().message().await.is_err(),
        };
        assert!(refused, "a call no rule matches was served");
    });
    let log = weir.access_log_of(3);
    let upstream_of = |path: &str, status: u64| {
        log.iter()
            .find(|l| l["path"] == path && l["status"] == status)
            .map(|l| l["upstream"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(upstream_of(UNARY, 200), Some(first.to_string()), "{log:?}");
    assert_eq!(
        upstream_of(STREAM, 200),
        Some(second.to_string()),
        "{log:?}"
    );
    assert!(upstream_of(STREAM, 404).is_some(), "{log:?}");
}
