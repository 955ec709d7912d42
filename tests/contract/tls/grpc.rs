//! gRPC end to end: a real gRPC client (tonic) over TLS and HTTP/2 through
//! the gateway, to a real gRPC server (tonic, HTTP/2 with prior knowledge)
//! behind a route with `upstream_h2 = true`. The service is written by
//! hand (no code generation): `authgate.test.Echo` with a unary `Say` and a
//! server-streaming `Count`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codec::Streaming;
use tonic::server::{Grpc, ServerStreamingService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Server};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

use super::secure;
use crate::edge::routes_file;
use crate::harness::TestUser;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Say {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    #[prost(string, tag = "1")]
    pub text: String,
    /// What the server was told: `X-Auth-User-Id`, `X-Forwarded-Proto`,
    /// and whether a forged `X-Auth-Roles` arrived.
    #[prost(string, tag = "2")]
    pub user_id: String,
    #[prost(string, tag = "3")]
    pub proto: String,
    #[prost(string, tag = "4")]
    pub roles: String,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

fn header(request: &Request<Say>, name: &str) -> String {
    request
        .metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

struct SayHandler;

impl UnaryService<Say> for SayHandler {
    type Response = Reply;
    type Future = BoxFuture<Result<Response<Reply>, Status>>;

    fn call(&mut self, request: Request<Say>) -> Self::Future {
        Box::pin(async move {
            let reply = Reply {
                text: format!("hello {}", request.get_ref().text),
                user_id: header(&request, "x-auth-user-id"),
                proto: header(&request, "x-forwarded-proto"),
                roles: header(&request, "x-auth-roles"),
            };
            if request.get_ref().text == "missing" {
                let mut status = Status::not_found("no such greeting");
                status
                    .metadata_mut()
                    .insert("x-detail", "from-the-upstream".parse().unwrap());
                return Err(status);
            }
            Ok(Response::new(reply))
        })
    }
}

struct CountHandler;

impl ServerStreamingService<Say> for CountHandler {
    type Response = Reply;
    type ResponseStream =
        Pin<Box<dyn futures_util::Stream<Item = Result<Reply, Status>> + Send + 'static>>;
    type Future = BoxFuture<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Say>) -> Self::Future {
        Box::pin(async move {
            let count = request.get_ref().count;
            let replies = (0..count).map(|i| {
                Ok(Reply {
                    text: format!("{i}"),
                    ..Reply::default()
                })
            });
            let stream: Self::ResponseStream = Box::pin(futures_util::stream::iter(replies));
            Ok(Response::new(stream))
        })
    }
}

/// The whole service, routed by path.
#[derive(Clone)]
struct EchoService;

impl tower_service::Service<http::Request<Body>> for EchoService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Reply, Say>::default());
            Ok(match request.uri().path() {
                "/authgate.test.Echo/Say" => grpc.unary(SayHandler, request).await,
                "/authgate.test.Echo/Count" => grpc.server_streaming(CountHandler, request).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "authgate.test.Echo";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_end_to_end_with_its_trailers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder().serve_with_incoming(EchoService, TcpIncoming::from(listener)),
    );
    let gone = super::free_port();
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/authgate.test.Echo"
        upstreams = ["{upstream}"]
        policy = "authenticated"
        upstream_h2 = true

        [[routes]]
        prefix = "/authgate.test.Gone"
        upstreams = ["127.0.0.1:{gone}"]
        policy = "public"
        upstream_h2 = true
        "#
    ));
    let s = secure(|o| o.set("ROUTES_FILE", &routes)).await;
    let user = TestUser::new("grpc");
    let reply = s.env.gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let token = reply.json["access_token"].as_str().unwrap().to_string();

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&s.ca.pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", s.env.gw.port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a gRPC channel to the gateway");
    let mut client = tonic::client::Grpc::new(channel);
    let say = PathAndQuery::from_static("/authgate.test.Echo/Say");
    let count = PathAndQuery::from_static("/authgate.test.Echo/Count");
    let codec = || ProstCodec::<Say, Reply>::default();
    let request = |text: &str, n: u32, token: Option<&str>| {
        let mut request = Request::new(Say {
            text: text.to_string(),
            count: n,
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
            .metadata_mut()
            .insert("x-auth-roles", "admin".parse().unwrap());
        request
    };

    // Unary, with the caller's identity and nothing forged.
    client.ready().await.unwrap();
    let answer = client
        .unary(request("ada", 0, Some(&token)), say.clone(), codec())
        .await
        .expect("the unary call");
    let reply = answer.get_ref();
    assert_eq!(reply.text, "hello ada");
    assert!(!reply.user_id.is_empty(), "no X-Auth-User-Id upstream");
    assert_eq!(reply.proto, "https");
    assert_eq!(reply.roles, "", "a forged X-Auth-Roles arrived");

    // A status in the trailers (a trailers-only answer) comes through whole.
    client.ready().await.unwrap();
    let status = client
        .unary(request("missing", 0, Some(&token)), say.clone(), codec())
        .await
        .expect_err("the upstream's status");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such greeting");
    assert_eq!(
        status
            .metadata()
            .get("x-detail")
            .and_then(|v| v.to_str().ok()),
        Some("from-the-upstream")
    );

    // Server streaming: every message, then the OK status in the trailers.
    client.ready().await.unwrap();
    let answer = client
        .server_streaming(request("n", 5, Some(&token)), count, codec())
        .await
        .expect("the streaming call");
    let mut stream: Streaming<Reply> = answer.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.expect("a message or the end") {
        got.push(reply.text);
    }
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
    let trailers = stream.trailers().await.expect("trailers");
    assert!(trailers.is_some(), "no trailers");

    // Without a token the policy refuses, before the upstream.
    client.ready().await.unwrap();
    let status = client
        .unary(request("x", 0, None), say, codec())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "Unauthorized.");

    // An upstream that is down: UNAVAILABLE, which gRPC clients retry.
    client.ready().await.unwrap();
    let status = client
        .unary(
            request("x", 0, Some(&token)),
            PathAndQuery::from_static("/authgate.test.Gone/Say"),
            codec(),
        )
        .await
        .expect_err("no upstream");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "Bad Gateway");
    server.abort();
}
