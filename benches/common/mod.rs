//! Pieces shared by the benchmarks: a keep-alive HTTP/1.1 client connection and a POST.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// The token the benchmarks start Sluice with.
pub(crate) const TOKEN: &str = "bench-token";

pub(crate) type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(crate) async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// POSTs `body` to `path` with the bench token; returns the status and the body.
pub(crate) async fn send(
    sender: &mut Sender,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> (u16, Bytes) {
    sender.ready().await.expect("ready");
    let req = Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}
