//! API behaviour: resources, pagination, scoping, idempotency, the fan-out commit.

use serde_json::{Value, json};
use sluice::log::schema::DeliveryState;

use sluice::clock::Clock;

use crate::harness::{TOKEN, call, get, post, start, start_clocked};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_round_trip_and_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    let created = post(
        addr,
        "/api/v1/app",
        &json!({"name": "Acme", "uid": "acme", "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(created.status, 201);
    let id = created.json["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("app_") && id.len() == 31, "{id}");
    assert_eq!(
        post(
            addr,
            "/api/v1/app",
            &json!({"name": "Other", "uid": "acme"})
        )
        .await
        .status,
        409
    );
    let again = post(
        addr,
        "/api/v1/app?get_if_exists=true",
        &json!({"name": "Other", "uid": "acme"}),
    )
    .await;
    assert_eq!(
        (again.status, again.json["id"].as_str()),
        (200, Some(id.as_str()))
    );
    // Every path id also accepts the uid; trailing slashes are ignored.
    assert_eq!(
        get(addr, &format!("/api/v1/app/{id}/")).await.json["uid"],
        "acme"
    );
    let patched = call(
        addr,
        "PATCH",
        "/api/v1/app/acme",
        Some(TOKEN),
        &[],
        br#"{"name":"Acme 2","uid":null}"#,
    )
    .await;
    assert_eq!(
        (patched.status, &patched.json["name"]),
        (200, &json!("Acme 2"))
    );
    assert!(
        patched.json.get("uid").is_none(),
        "uid cleared: {}",
        patched.json
    );
    assert_eq!(
        get(addr, "/api/v1/app/acme").await.status,
        404,
        "the old uid no longer resolves"
    );
    let put = call(
        addr,
        "PUT",
        "/api/v1/app/fresh",
        Some(TOKEN),
        &[],
        br#"{"name":"Fresh"}"#,
    )
    .await;
    assert_eq!((put.status, &put.json["uid"]), (201, &json!("fresh")));
    let put = call(
        addr,
        "PUT",
        "/api/v1/app/fresh",
        Some(TOKEN),
        &[],
        br#"{"name":"Fresher"}"#,
    )
    .await;
    assert_eq!((put.status, &put.json["name"]), (200, &json!("Fresher")));
    assert_eq!(
        call(
            addr,
            "DELETE",
            &format!("/api/v1/app/{id}"),
            Some(TOKEN),
            &[],
            b""
        )
        .await
        .status,
        204
    );
    assert_eq!(get(addr, &format!("/api/v1/app/{id}")).await.status, 404);
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_list_pages_forward_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    for i in 0..7 {
        assert_eq!(
            post(addr, "/api/v1/app", &json!({"name": format!("a{i}")}))
                .await
                .status,
            201
        );
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/app?limit=3".to_owned();
    let mut pages = Vec::new();
    loop {
        let page = get(addr, &path).await;
        assert_eq!(page.status, 200);
        pages.push(page.json.clone());
        names.extend(
            page.json["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|a| a["name"].as_str().expect("name").to_owned()),
        );
        if page.json["done"] == json!(true) {
            break;
        }
        path = format!(
            "/api/v1/app?limit=3&iterator={}",
            page.json["iterator"].as_str().expect("iterator")
        );
    }
    assert_eq!(names, ["a0", "a1", "a2", "a3", "a4", "a5", "a6"]);
    // The second page's prevIterator leads back to the first page.
    let prev = pages[1]["prevIterator"].as_str().expect("prevIterator");
    let back = get(addr, &format!("/api/v1/app?limit=3&iterator={prev}")).await;
    let back_names: Vec<&str> = back.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(back_names, ["a0", "a1", "a2"]);
    assert_eq!(get(addr, "/api/v1/app?limit=251").await.status, 422);
    sluice.stop().await;
}

async fn setup_app_with_endpoints(addr: std::net::SocketAddr) {
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "Shop", "uid": "shop"}))
            .await
            .status,
        201
    );
    for name in ["order.paid", "order.shipped"] {
        assert_eq!(
            post(
                addr,
                "/api/v1/event-type",
                &json!({"name": name, "description": name})
            )
            .await
            .status,
            201
        );
    }
    let endpoints = [
        json!({"url": "https://a.example/hook", "uid": "all"}),
        json!({"url": "https://b.example/hook", "uid": "paid", "eventTypes": ["order.paid"]}),
        json!({"url": "https://c.example/hook", "uid": "eu", "channels": ["eu"]}),
        json!({"url": "https://d.example/hook", "uid": "off", "disabled": true}),
    ];
    for endpoint in endpoints {
        assert_eq!(
            post(addr, "/api/v1/app/shop/endpoint", &endpoint)
                .await
                .status,
            201,
            "{endpoint}"
        );
    }
}

/// Reads the delivery rows of a message: (endpoint uid → state).
fn deliveries_of(sluice: &sluice::app::Running, msg_id: &str) -> Vec<(String, DeliveryState)> {
    use sluice::log::tables;
    sluice
        .log()
        .read(|rtxn, dbs| {
            let app = tables::app_by_ref(rtxn, dbs, "shop")?.expect("app");
            let (seq, _) = tables::message_by_ref(rtxn, dbs, app.key, msg_id)?.expect("message");
            let mut out = Vec::new();
            for key in tables::app_endpoint_keys(rtxn, dbs, app.key)? {
                let key = sluice::log::EndpointKey(key);
                let endpoint = tables::endpoint_by_key(rtxn, dbs, key)?.expect("endpoint");
                if let Some(row) =
                    sluice::log::deliveries::get(rtxn, dbs, key, sluice::log::Seq(seq))?
                {
                    out.push((endpoint.uid.unwrap_or_default(), row.state));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_create_commits_one_delivery_per_matching_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    setup_app_with_endpoints(addr).await;
    let paid = post(
        addr,
        "/api/v1/app/shop/msg",
        &json!({"eventType": "order.paid", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(paid.status, 202);
    let pending = DeliveryState::Pending;
    let want = vec![
        ("all".to_owned(), pending),
        ("off".to_owned(), DeliveryState::Skipped),
        ("paid".to_owned(), pending),
    ];
    assert_eq!(
        deliveries_of(&sluice, paid.json["id"].as_str().expect("id")),
        want
    );
    let eu = post(
        addr,
        "/api/v1/app/shop/msg",
        &json!({"eventType": "order.shipped", "payload": {}, "channels": ["eu"]}),
    )
    .await;
    let want = vec![
        ("all".to_owned(), pending),
        ("eu".to_owned(), pending),
        ("off".to_owned(), DeliveryState::Skipped),
    ];
    assert_eq!(
        deliveries_of(&sluice, eu.json["id"].as_str().expect("id")),
        want
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_list_filters_and_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(1_700_000_000_000);
    let sluice = start_clocked(dir.path(), clock.clone()).await;
    let addr = sluice.addr;
    setup_app_with_endpoints(addr).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        clock.advance_ms(1000);
        let event_type = if n % 3 == 0 {
            "order.shipped"
        } else {
            "order.paid"
        };
        let body = json!({"eventType": event_type, "payload": {"n": n}, "eventId": format!("e{n}"), "channels": [format!("c{}", n % 2)]});
        let created = post(addr, "/api/v1/app/shop/msg", &body).await;
        assert_eq!(created.status, 202);
        ids.push(created.json["id"].as_str().expect("id").to_owned());
    }
    let ns = |page: &Value| -> Vec<i64> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["payload"]["n"].as_i64().expect("n"))
            .collect()
    };
    let first = get(addr, "/api/v1/app/shop/msg?limit=5").await.json;
    assert_eq!(ns(&first), [11, 10, 9, 8, 7], "newest first");
    let next = get(
        addr,
        &format!(
            "/api/v1/app/shop/msg?limit=5&iterator={}",
            first["iterator"].as_str().expect("it")
        ),
    )
    .await
    .json;
    assert_eq!(ns(&next), [6, 5, 4, 3, 2]);
    let shipped = get(addr, "/api/v1/app/shop/msg?event_types=order.shipped")
        .await
        .json;
    assert_eq!(ns(&shipped), [9, 6, 3, 0]);
    let c1 = get(addr, "/api/v1/app/shop/msg?channel=c1&limit=3")
        .await
        .json;
    assert_eq!(
        (ns(&c1), c1["done"].as_bool()),
        (vec![11, 9, 7], Some(false))
    );
    let no_content = get(addr, "/api/v1/app/shop/msg?with_content=false&limit=1")
        .await
        .json;
    assert_eq!(no_content["data"][0]["payload"], json!({}));
    // before/after are exclusive bounds on the creation time (one second apart here).
    let time_of = async |n: usize| {
        get(addr, &format!("/api/v1/app/shop/msg/{}", ids[n]))
            .await
            .json["timestamp"]
            .clone()
    };
    assert_eq!(time_of(6).await, json!("2023-11-14T22:13:27.000Z"));
    let after = get(addr, "/api/v1/app/shop/msg?after=2023-11-14T22:13:27.000Z")
        .await
        .json;
    assert_eq!(ns(&after), [11, 10, 9, 8, 7]);
    let window = get(
        addr,
        "/api/v1/app/shop/msg?after=2023-11-14T23:13:24%2B01:00&before=2023-11-14T22:13:27Z",
    )
    .await
    .json;
    assert_eq!(ns(&window), [5, 4]);
    let by_event_id = get(addr, "/api/v1/app/shop/msg/e4").await;
    assert_eq!(
        (by_event_id.status, &by_event_id.json["id"]),
        (200, &json!(ids[4]))
    );
    assert_eq!(
        get(addr, "/api/v1/app/shop/msg?iterator=msg_nope")
            .await
            .status,
        422
    );
    let expunge = call(
        addr,
        "DELETE",
        &format!("/api/v1/app/shop/msg/{}/content", ids[4]),
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(expunge.status, 204);
    assert_eq!(
        get(addr, "/api/v1/app/shop/msg/e4").await.json["payload"],
        json!({"expired": true})
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_secret_headers_and_scoped_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    setup_app_with_endpoints(addr).await;
    let secret = get(addr, "/api/v1/app/shop/endpoint/all/secret").await.json["key"]
        .as_str()
        .expect("key")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    for i in 0..10 {
        let r = call(
            addr,
            "POST",
            "/api/v1/app/shop/endpoint/all/secret/rotate",
            Some(TOKEN),
            &[],
            b"{}",
        )
        .await;
        assert_eq!(r.status, 200, "rotation {i}");
        assert_eq!(
            r.json["key"],
            get(addr, "/api/v1/app/shop/endpoint/all/secret").await.json["key"]
        );
    }
    let over = call(
        addr,
        "POST",
        "/api/v1/app/shop/endpoint/all/secret/rotate",
        Some(TOKEN),
        &[],
        b"{}",
    )
    .await;
    assert_eq!(
        (over.status, &over.json["code"]),
        (400, &json!("limit_reached"))
    );
    assert_ne!(
        get(addr, "/api/v1/app/shop/endpoint/all/secret").await.json["key"],
        json!(secret)
    );

    let headers = br#"{"headers":{"X-Tenant":"t1","Authorization":"Bearer s3cret"}}"#;
    assert_eq!(
        call(
            addr,
            "PUT",
            "/api/v1/app/shop/endpoint/all/headers",
            Some(TOKEN),
            &[],
            headers
        )
        .await
        .status,
        204
    );
    let shown = get(addr, "/api/v1/app/shop/endpoint/all/headers")
        .await
        .json;
    assert_eq!(
        shown,
        json!({"headers": {"X-Tenant": "t1"}, "sensitive": ["Authorization"]})
    );
    let patch = br#"{"headers":{"X-Region":"eu"},"deleteHeaders":["x-tenant"]}"#;
    assert_eq!(
        call(
            addr,
            "PATCH",
            "/api/v1/app/shop/endpoint/all/headers",
            Some(TOKEN),
            &[],
            patch
        )
        .await
        .status,
        204
    );
    let shown = get(addr, "/api/v1/app/shop/endpoint/all/headers")
        .await
        .json;
    assert_eq!(shown["headers"], json!({"X-Region": "eu"}));
    let forbidden = br#"{"headers":{"Content-Type":"text/plain"}}"#;
    assert_eq!(
        call(
            addr,
            "PUT",
            "/api/v1/app/shop/endpoint/all/headers",
            Some(TOKEN),
            &[],
            forbidden
        )
        .await
        .status,
        422
    );

    // An app-scoped token sees its app only.
    assert_eq!(
        post(
            addr,
            "/api/v1/app",
            &json!({"name": "Other", "uid": "other"})
        )
        .await
        .status,
        201
    );
    let app_token = crate::harness::app_token(&sluice, "shop").await;
    let t = Some(app_token.as_str());
    assert_eq!(
        call(addr, "GET", "/api/v1/app/shop/endpoint", t, &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        call(addr, "GET", "/api/v1/app/other", t, &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        call(addr, "GET", "/api/v1/app/other/msg", t, &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        call(addr, "GET", "/api/v1/app", t, &[], b"").await.status,
        403
    );
    assert_eq!(
        call(addr, "DELETE", "/api/v1/app/shop", t, &[], b"")
            .await
            .status,
        403
    );
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_archive_and_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    let schemas = json!({"1": {"type": "object"}});
    let body = json!({"name": "a.one", "description": "A", "schemas": schemas});
    assert_eq!(post(addr, "/api/v1/event-type", &body).await.status, 201);
    assert_eq!(post(addr, "/api/v1/event-type", &body).await.status, 409);
    assert_eq!(
        post(
            addr,
            "/api/v1/event-type",
            &json!({"name": "b.two", "description": "B"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        call(
            addr,
            "DELETE",
            "/api/v1/event-type/b.two",
            Some(TOKEN),
            &[],
            b""
        )
        .await
        .status,
        204
    );
    let list = get(addr, "/api/v1/event-type").await.json;
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    assert!(
        list["data"][0].get("schemas").is_none(),
        "schemas only with_content"
    );
    let all = get(
        addr,
        "/api/v1/event-type?include_archived=true&with_content=true",
    )
    .await
    .json;
    assert_eq!(all["data"][0]["schemas"], schemas);
    assert_eq!(all["data"][1]["archived"], json!(true));
    // An endpoint cannot filter on an archived or unknown type.
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "x", "uid": "x"}))
            .await
            .status,
        201
    );
    let ep = post(
        addr,
        "/api/v1/app/x/endpoint",
        &json!({"url": "https://x.example", "eventTypes": ["b.two"]}),
    )
    .await;
    assert_eq!(
        (ep.status, &ep.json["detail"][0]["loc"]),
        (422, &json!(["body", "eventTypes"]))
    );
    let expunge = call(
        addr,
        "DELETE",
        "/api/v1/event-type/b.two?expunge=true",
        Some(TOKEN),
        &[],
        b"",
    )
    .await;
    assert_eq!(expunge.status, 204);
    assert_eq!(get(addr, "/api/v1/event-type/b.two").await.status, 404);
    sluice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_posts_replay_across_concurrency_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sluice = start(dir.path()).await;
    let addr = sluice.addr;
    assert_eq!(
        post(addr, "/api/v1/app", &json!({"name": "i", "uid": "i"}))
            .await
            .status,
        201
    );
    let body = br#"{"eventType":"x","payload":{"n":1}}"#;
    let key: &'static [(&str, &str)] = &[("idempotency-key", "key-1")];
    let calls = (0..8).map(|_| call(addr, "POST", "/api/v1/app/i/msg", Some(TOKEN), key, body));
    let responses = futures_join_all(calls.collect()).await;
    let ids: std::collections::BTreeSet<String> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, 202);
            r.json["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent duplicates share one message: {ids:?}"
    );
    let list = get(addr, "/api/v1/app/i/msg").await.json;
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    // Another key, or another URI, is another request.
    let other = call(
        addr,
        "POST",
        "/api/v1/app/i/msg",
        Some(TOKEN),
        &[("idempotency-key", "key-2")],
        body,
    )
    .await;
    assert_ne!(other.json["id"], json!(ids.first()));
    sluice.stop().await;

    let sluice = start(dir.path()).await;
    let replay = call(
        sluice.addr,
        "POST",
        "/api/v1/app/i/msg",
        Some(TOKEN),
        key,
        body,
    )
    .await;
    assert_eq!(
        (replay.status, replay.json["id"].as_str()),
        (202, ids.first().map(String::as_str))
    );
    sluice.stop().await;
}

async fn futures_join_all<
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
>(
    futures: Vec<F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}
