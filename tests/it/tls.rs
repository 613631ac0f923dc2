//! The API over TLS: a client that trusts the configured certificate's CA is served; one
//! that does not is refused at the handshake. The certificates are made with the openssl
//! command-line tool for each run.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::harness::{TOKEN, make_certificates, test_config};

/// GET over HTTPS with a client that trusts exactly `roots`.
async fn get_https(url: &str, roots: rustls::RootCertStore) -> Result<u16, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = hyper::Request::get(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .expect("request");
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_to_clients_that_trust_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    let mut config = test_config(&dir.path().join("data"));
    config.api.tls_cert_file = Some(dir.path().join("cert.pem"));
    config.api.tls_key_file = Some(dir.path().join("key.pem"));
    let sluice = sluice::app::start(&config, Some(TOKEN), sluice::clock::Clock::System)
        .await
        .expect("start");
    let url = format!("https://localhost:{}/api/v1/app", sluice.addr.port());

    let mut trusting = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(dir.path().join("ca.pem")).expect("ca");
    trusting.add(ca).expect("add ca");
    assert_eq!(get_https(&url, trusting).await, Ok(200));

    let public_roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let refused = get_https(&url, public_roots).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "an untrusting client fails the handshake: {refused:?}"
    );
    // Plain HTTP on a TLS listener gets nothing.
    let plain =
        crate::harness::try_call(sluice.addr, "GET", "/api/v1/health", None, &[], b"").await;
    assert!(plain.is_err(), "{plain:?}");
    sluice.stop().await;

    // A key that does not match the certificate stops the start with a clear error.
    config.api.tls_key_file = Some(dir.path().join("ca.key"));
    let failed = sluice::app::start(&config, Some(TOKEN), sluice::clock::Clock::System).await;
    let error = failed.err().expect("refused").to_string();
    assert!(error.contains("TLS"), "{error}");
}
