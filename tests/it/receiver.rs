//! A real webhook receiver on loopback for delivery tests: records every request and
//! answers as the test scripts it (status, `Retry-After`, or never).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub at: Instant,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// How to answer the n-th request (0-based).
pub(crate) enum Answer {
    Status(u16),
    StatusWithRetryAfter(u16, &'static str),
    /// Never answer (the connection stays open until the client gives up).
    Hang,
    /// Answer with this status after this long (a slow receiver).
    After(std::time::Duration, u16),
    /// Answer with this status and close the connection (`connection: close`).
    Close(u16),
}

type Script = Arc<dyn Fn(usize, &Received) -> Answer + Send + Sync>;

/// A running receiver.
pub(crate) struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    /// Requests being held open by `Answer::Hang`.
    pub hanging: Arc<std::sync::atomic::AtomicUsize>,
}

/// The longest a test waits for requests to arrive at a receiver.
const RECEIVER_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl Receiver {
    pub(crate) async fn start(
        script: impl Fn(usize) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_with(move |n, _| script(n)).await
    }

    /// Like `start`, with the script seeing each request.
    pub(crate) async fn start_with(
        script: impl Fn(usize, &Received) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    /// Like `start_with`, listening on `addr`.
    pub(crate) async fn start_at(
        addr: SocketAddr,
        script: impl Fn(usize, &Received) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::serve(addr, None, script).await
    }

    /// A receiver that answers 200 over HTTPS with the certificate and key of `dir`
    /// (`harness::make_certificates`).
    pub(crate) async fn start_tls(dir: &std::path::Path) -> Receiver {
        let acceptor = sluice::api::tls::acceptor(&dir.join("cert.pem"), &dir.join("key.pem"))
            .expect("the test certificate loads");
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Receiver::serve(addr, Some(acceptor), |_, _| Answer::Status(200)).await
    }

    async fn serve(
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: impl Fn(usize, &Received) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let hanging = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let script: Script = Arc::new(script);
        let (seen2, hanging2) = (Arc::clone(&seen), Arc::clone(&hanging));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, count_tx, script, hanging) = (
                    Arc::clone(&seen2),
                    Arc::clone(&count_tx),
                    Arc::clone(&script),
                    Arc::clone(&hanging2),
                );
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, count_tx, script, hanging) = (
                            Arc::clone(&seen),
                            Arc::clone(&count_tx),
                            Arc::clone(&script),
                            Arc::clone(&hanging),
                        );
                        async move {
                            let at = Instant::now();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let received = Received { at, headers, body };
                            let (n, answer) = {
                                let mut seen = seen.lock().expect("lock");
                                let answer = script(seen.len(), &received);
                                seen.push(received);
                                (seen.len() - 1, answer)
                            };
                            count_tx.send_replace(n + 1);
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            match answer {
                                Answer::Status(status) => {
                                    *response.status_mut() = status.try_into().expect("status")
                                }
                                Answer::StatusWithRetryAfter(status, after) => {
                                    *response.status_mut() = status.try_into().expect("status");
                                    response
                                        .headers_mut()
                                        .insert("retry-after", after.parse().expect("value"));
                                }
                                Answer::Hang => {
                                    hanging.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    std::future::pending::<()>().await;
                                }
                                Answer::After(delay, status) => {
                                    crate::harness::pause(delay).await;
                                    *response.status_mut() = status.try_into().expect("status");
                                }
                                Answer::Close(status) => {
                                    *response.status_mut() = status.try_into().expect("status");
                                    response
                                        .headers_mut()
                                        .insert("connection", "close".parse().expect("value"));
                                }
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            seen,
            count,
            hanging,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Waits until at least `n` requests arrived; returns them all. Fails the test if
    /// they have not after `RECEIVER_WAIT_MAX` (a delivery that never comes is a failure
    /// that says how many did, not a run that hangs).
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut count = self.count.clone();
        let arrived = tokio::time::timeout(RECEIVER_WAIT_MAX, count.wait_for(|c| *c >= n)).await;
        match arrived {
            Ok(alive) => {
                alive.expect("receiver alive");
            }
            Err(_) => panic!(
                "{} of {n} requests arrived within {RECEIVER_WAIT_MAX:?}",
                *self.count.borrow()
            ),
        }
        self.received()
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").clone()
    }
}
