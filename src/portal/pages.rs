//! The portal's pages: each reads through `/api/v1` calls as the session (`Visit::api`)
//! and renders with the escaping builder; each form posts back here and redirects
//! (post/redirect/get). Lists show at most `PORTAL_PAGE_ROWS_MAX` rows.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::html::Html;
use super::{Answer, Theme, Visit};
use crate::api::{ApiError, ApiState, capability as cap};
use crate::clock::format_rfc3339;
use crate::limits::{
    PORTAL_BODY_SHOWN_BYTES_MAX, PORTAL_COUNTED_DELIVERIES_PER_PAGE_MAX, PORTAL_PAGE_ROWS_MAX,
};
use crate::log::tables;

const HOUR_MS: u64 = 3_600_000;

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn data(v: &Value) -> &[Value] {
    v.get("data")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// What a path segment or query value keeps unencoded: ids' and uids' characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.');

/// A path segment, percent-encoded (ids and uids are plain, but nothing is assumed).
pub(super) fn seg(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// The text cut to `max` bytes at a character boundary, and whether it was cut.
fn cut(text: &str, max: usize) -> (&str, bool) {
    let shown = crate::text::prefix_within(text, max);
    (shown, shown.len() < text.len())
}

/// The page around `body`.
fn layout(
    state: &ApiState,
    title: &str,
    nav: bool,
    csrf: Option<&str>,
    theme: &Theme,
    body: &Html,
) -> String {
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en\"")
        .raw(match theme.dark_mode {
            Some(true) => " class=\"dark\"",
            Some(false) => " class=\"light\"",
            None => "",
        })
        .raw("><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<meta name=\"referrer\" content=\"no-referrer\">")
        .raw("<link rel=\"icon\" href=\"data:,\"><title>")
        .text(title)
        .raw(" · ")
        .text(&state.portal.display_name)
        .raw("</title><link rel=\"stylesheet\" href=\"/portal/assets/portal.css\">")
        .raw("<link rel=\"stylesheet\" href=\"/portal/assets/theme.css?")
        .text(&theme.encode())
        .raw("\">")
        .raw("<script src=\"/portal/assets/portal.js\" defer></script></head><body><header>");
    // Validated when read (config, link): an https:// URL or a path here; escaped anyway.
    if let Some(logo) = theme.icon.as_deref().or(state.portal.logo_url.as_deref()) {
        h.raw("<img class=\"logo\" alt=\"\" src=\"")
            .text(logo)
            .raw("\">");
    }
    h.raw("<strong>")
        .text(&state.portal.display_name)
        .raw("</strong>");
    if nav && !theme.hide_navigation {
        h.raw("<nav aria-label=\"Main\"><a href=\"/portal/\">Endpoints</a>")
            .raw("<a href=\"/portal/messages\">Messages</a>")
            .raw("<a href=\"/portal/event-types\">Event catalogue</a></nav>");
        if let Some(csrf) = csrf {
            h.raw("<form class=\"inline\" method=\"post\" action=\"/portal/logout\">");
            hidden_csrf(&mut h, csrf);
            h.raw("<button class=\"secondary\" type=\"submit\">Log out</button></form>");
        }
    }
    h.raw("</header>").raw(if theme.no_gutters {
        "<main class=\"flush\">"
    } else {
        "<main>"
    });
    let mut out = h.into_string();
    out.push_str(body.as_str());
    out.push_str("</main></body></html>");
    out
}

fn hidden_csrf(h: &mut Html, csrf: &str) {
    h.raw("<input type=\"hidden\" name=\"_csrf\" value=\"")
        .text(csrf)
        .raw("\">");
}

fn page(v: &Visit<'_>, title: &str, body: &Html) -> Answer {
    let mut framed = Html::new();
    if v.operator {
        // The operator's bar: which application, and the way back to all of them.
        framed
            .raw("<nav class=\"operator\" aria-label=\"Operator\">")
            .link("/portal/apps", "All applications");
        if !v.app_id.is_empty() {
            framed
                .raw(" <span class=\"muted\">Application <code>")
                .text(&v.app_id)
                .raw("</code></span>");
        }
        framed.raw("</nav>");
    }
    framed.append(body);
    Answer::Page(
        StatusCode::OK,
        layout(v.state, title, true, Some(&v.csrf), &v.theme, &framed),
    )
}

/// The operator's sign-in: an org-wide API token for a session that sees every
/// application (or use a link from `sluice portal-link`).
pub(super) fn operator_login(state: &ApiState, error: Option<&ApiError>) -> Answer {
    let mut b = Html::new();
    b.raw("<h1>Operator sign-in</h1><p>Sign in with an org-wide API token to see every ")
        .raw("application, or open a link from <code>sluice portal-link</code>.</p>");
    let status = match error {
        None => StatusCode::OK,
        Some(ApiError::AuthThrottled { .. }) => {
            b.raw("<div class=\"banner\" role=\"alert\">Too many failed sign-ins; wait a ")
                .raw("moment.</div>");
            StatusCode::TOO_MANY_REQUESTS
        }
        Some(_) => {
            b.raw("<div class=\"banner\" role=\"alert\">That is not a valid org-wide API ")
                .raw("token.</div>");
            StatusCode::UNAUTHORIZED
        }
    };
    b.raw("<form method=\"post\" action=\"/portal/operator\">")
        .raw("<label for=\"token\">Org-wide API token</label>")
        .raw("<input id=\"token\" name=\"token\" type=\"password\" required autocomplete=\"off\">")
        .raw("<p><button type=\"submit\">Sign in</button></p></form>");
    Answer::Page(
        status,
        layout(
            state,
            "Operator sign-in",
            false,
            None,
            &Theme::default(),
            &b,
        ),
    )
}

/// The landing page of an access link: its script posts the fragment's key.
pub(super) fn login(state: &ApiState) -> Answer {
    let mut b = Html::new();
    b.raw("<h1>Signing you in</h1><p id=\"login-status\" role=\"status\">One moment…</p>")
        .raw("<form id=\"login-form\" method=\"post\" action=\"/portal/session\">")
        .raw("<input type=\"hidden\" name=\"key\" value=\"\">")
        .raw("<input type=\"hidden\" name=\"next\" value=\"\">")
        .raw("<input type=\"hidden\" name=\"theme\" value=\"\">")
        .raw("<noscript><p>Signing in needs JavaScript.</p></noscript></form>");
    Answer::Page(
        StatusCode::OK,
        layout(state, "Sign in", false, None, &Theme::default(), &b),
    )
}

/// A missing, used or expired link or session.
pub(super) fn expired(state: &ApiState) -> Answer {
    let mut b = Html::new();
    b.raw("<h1>This link has expired</h1><p>Links into this portal work once and for a ")
        .raw("short time, and sessions end. Ask for a new link")
        .raw(match &state.portal.refresh_url {
            Some(_) => ":",
            None => " where you found this one.",
        })
        .raw("</p>");
    if let Some(url) = &state.portal.refresh_url {
        b.raw("<p><a class=\"button\" href=\"")
            .text(url)
            .raw("\">Get a new link</a></p>");
    }
    Answer::Page(
        StatusCode::UNAUTHORIZED,
        layout(state, "Link expired", false, None, &Theme::default(), &b),
    )
}

pub(super) fn logged_out(state: &ApiState) -> Answer {
    let mut b = Html::new();
    b.raw("<h1>You are logged out</h1><p>Open a new link to come back.</p>");
    Answer::Page(
        StatusCode::OK,
        layout(state, "Logged out", false, None, &Theme::default(), &b),
    )
}

pub(super) fn error_page(state: &ApiState, error: &ApiError) -> Answer {
    let (status, title, text) = match error {
        ApiError::Forbidden => (
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Your access to this portal does not include this action.",
        ),
        ApiError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here, or it was deleted.",
        ),
        _ => (
            error.status(),
            "Something went wrong",
            "The request could not be completed.",
        ),
    };
    let mut b = Html::new();
    b.raw("<h1>")
        .text(title)
        .raw("</h1><p>")
        .text(text)
        .raw("</p>");
    if let ApiError::Validation(_) | ApiError::BadRequest { .. } = error {
        b.raw("<pre>")
            .text(&String::from_utf8_lossy(&error.body()))
            .raw("</pre>");
    }
    b.raw("<p><a href=\"/portal/\">Back to endpoints</a></p>");
    Answer::Page(
        status,
        layout(state, title, true, None, &Theme::default(), &b),
    )
}

/// Routes a signed-in request to its page.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per page and form: the routing reads as the list of pages"
)]
pub(super) async fn route(
    v: &Visit<'_>,
    method: &Method,
    segs: &[&str],
) -> Result<Answer, ApiError> {
    if v.operator {
        match (method.clone(), segs) {
            (Method::GET, ["apps"]) => return applications(v).await,
            // Nothing chosen yet: every page is the list of applications.
            _ if v.app_id.is_empty() => return Ok(Answer::Redirect("/portal/apps".to_owned())),
            _ => {}
        }
    }
    match (method.clone(), segs) {
        (Method::GET, []) => endpoints(v).await,
        (Method::GET, ["endpoints", "new"]) => new_endpoint(v, None).await,
        (Method::POST, ["endpoints", "new"]) => create_endpoint(v).await,
        (Method::GET, ["endpoints", ep]) => endpoint(v, ep).await,
        (Method::POST, ["endpoints", ep, action @ ("enable" | "disable")]) => {
            let body = json!({"disabled": *action == "disable"});
            v.api(Method::PATCH, &endpoint_path(v, ep), "", Some(body))
                .await?;
            Ok(Answer::Redirect(format!("/portal/endpoints/{}", seg(ep))))
        }
        (Method::POST, ["endpoints", ep, "delete"]) => {
            v.api(Method::DELETE, &endpoint_path(v, ep), "", None)
                .await?;
            Ok(Answer::Redirect("/portal/".to_owned()))
        }
        (Method::POST, ["endpoints", ep, "recover"]) => recover(v, ep).await,
        (Method::GET, ["endpoints", ep, "edit"]) => settings(v, ep, None).await,
        (Method::POST, ["endpoints", ep, "edit"]) => save_settings(v, ep).await,
        (Method::POST, ["endpoints", ep, "headers"]) => {
            let name = v.field("name").unwrap_or("").trim();
            let value = v.field("value").unwrap_or("");
            let path = format!("{}/headers", endpoint_path(v, ep));
            let body =
                json!({"headers": {name: if value.is_empty() { None } else { Some(value) }}});
            v.api(Method::PATCH, &path, "", Some(body)).await?;
            Ok(Answer::Redirect(format!(
                "/portal/endpoints/{}/edit",
                seg(ep)
            )))
        }
        (Method::GET, ["endpoints", ep, "secret"]) => secret(v, ep).await,
        (Method::POST, ["endpoints", ep, "secret", "rotate"]) => {
            let grace: u64 = v
                .field("grace")
                .and_then(|g| g.parse().ok())
                .unwrap_or(86_400);
            let path = format!("{}/secret/rotate", endpoint_path(v, ep));
            v.api(
                Method::POST,
                &path,
                "",
                Some(json!({"gracePeriodSeconds": grace})),
            )
            .await?;
            Ok(Answer::Redirect(format!(
                "/portal/endpoints/{}/secret?rotated=1",
                seg(ep)
            )))
        }
        (Method::GET, ["endpoints", ep, "test"]) => testing(v, ep).await,
        (Method::POST, ["endpoints", ep, "test"]) => {
            let event_type = v.field("eventType").unwrap_or("svix.ping");
            let path = format!("{}/send-example", endpoint_path(v, ep));
            let message = v
                .api(
                    Method::POST,
                    &path,
                    "",
                    Some(json!({"eventType": event_type})),
                )
                .await?;
            Ok(Answer::Redirect(format!(
                "/portal/messages/{}",
                seg(s(&message, "id"))
            )))
        }
        (Method::GET, ["messages"]) => messages(v).await,
        (Method::GET, ["messages", msg]) => message(v, msg).await,
        (Method::POST, ["messages", msg, "resend", ep]) => {
            let path = format!(
                "app/{}/msg/{}/endpoint/{}/resend",
                seg(&v.app_id),
                seg(msg),
                seg(ep)
            );
            v.api(Method::POST, &path, "", None).await?;
            Ok(Answer::Redirect(format!(
                "/portal/messages/{}?resent=1",
                seg(msg)
            )))
        }
        (Method::POST, ["messages", msg, "recover", ep]) => recover_from(v, msg, ep).await,
        (Method::GET, ["messages", msg, "attempts", attempt]) => {
            attempt_page(v, msg, attempt).await
        }
        (Method::GET, ["event-types"]) => event_types(v).await,
        _ => Err(ApiError::NotFound("Page not found.")),
    }
}

/// The operator's list: every application (a page of them) with its endpoints' health
/// (endpoints, failing, disabled, the last 24 hours' successes and failures).
async fn applications(v: &Visit<'_>) -> Result<Answer, ApiError> {
    let mut q = format!("limit={PORTAL_PAGE_ROWS_MAX}");
    if let Some(iterator) = v.query_param("iterator").filter(|i| !i.is_empty()) {
        q.push_str("&iterator=");
        q.push_str(&seg(&iterator));
    }
    let list = v.api(Method::GET, "app", &q, None).await?;
    let rows = data(&list);
    let health = health_of(v, rows)?;
    let mut b = Html::new();
    b.raw("<h1>Applications</h1>");
    if rows.is_empty() {
        b.raw("<div class=\"notice\">No applications yet.</div>");
    } else {
        b.raw(
            "<table><caption class=\"muted\">Applications and their endpoints</caption><thead><tr>",
        )
        .raw("<th scope=\"col\">Application</th><th scope=\"col\">Endpoints</th>")
        .raw("<th scope=\"col\">Failing</th><th scope=\"col\">Disabled</th>")
        .raw("<th scope=\"col\">Last 24 hours</th></tr></thead><tbody>");
        for (app, h) in rows.iter().zip(&health) {
            let name = match s(app, "name") {
                "" => s(app, "id"),
                name => name,
            };
            b.raw("<tr><td>")
                .link(&format!("/portal/apps/{}", seg(s(app, "id"))), name)
                .raw(" <code class=\"muted\">")
                .text(s(app, "id"))
                .raw("</code></td><td>")
                .num(h.endpoints)
                .raw("</td><td")
                .raw(if h.failing > 0 {
                    " class=\"bad\">"
                } else {
                    ">"
                })
                .num(h.failing)
                .raw("</td><td")
                .raw(if h.disabled > 0 {
                    " class=\"warn\">"
                } else {
                    ">"
                })
                .num(h.disabled)
                .raw("</td><td>");
            day_counts(&mut b, h.deliveries);
            b.raw("</td></tr>");
        }
        b.raw("</tbody></table>");
    }
    if list["done"].as_bool() == Some(false)
        && let Some(next) = list["iterator"].as_str()
    {
        b.raw("<p><a class=\"button secondary\" href=\"/portal/apps?iterator=")
            .text(&seg(next))
            .raw("\">Next page</a></p>");
    }
    Ok(page(v, "Applications", &b))
}

/// The applications' health over the last 24 hours, within
/// `PORTAL_COUNTED_DELIVERIES_PER_PAGE_MAX` delivery rows in all.
fn health_of(v: &Visit<'_>, apps: &[Value]) -> Result<Vec<tables::AppHealth>, ApiError> {
    let now = v.state.clock.now_ms();
    let per_app = PORTAL_COUNTED_DELIVERIES_PER_PAGE_MAX / apps.len().max(1);
    Ok(v.state.log.read(|rtxn, dbs| {
        let day = tables::seqs_created_since(rtxn, dbs, now.saturating_sub(24 * HOUR_MS))?;
        let mut out = Vec::with_capacity(apps.len());
        for app in apps {
            out.push(match tables::app_by_ref(rtxn, dbs, s(app, "id"))? {
                Some(app) => tables::app_health(rtxn, dbs, app.key, day, per_app)?,
                None => tables::AppHealth::default(),
            });
        }
        Ok(out)
    })?)
}

/// Each endpoint's successes and failures over the last 24 hours (messages created in
/// them), within `PORTAL_COUNTED_DELIVERIES_PER_PAGE_MAX` delivery rows in all.
fn day_counts_of(
    v: &Visit<'_>,
    endpoints: &[Value],
) -> Result<Vec<tables::DeliveryCounts>, ApiError> {
    let now = v.state.clock.now_ms();
    let per_row = PORTAL_COUNTED_DELIVERIES_PER_PAGE_MAX / endpoints.len().max(1);
    Ok(v.state.log.read(|rtxn, dbs| {
        let day = tables::seqs_created_since(rtxn, dbs, now.saturating_sub(24 * HOUR_MS))?;
        let app_key = tables::app_by_ref(rtxn, dbs, &v.app_id)?.map(|a| a.key);
        // An endpoint deleted since the page listed it counts nothing.
        let mut keys = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let endpoint = match app_key {
                Some(app_key) => tables::endpoint_row_by_ref(rtxn, dbs, app_key, s(e, "id"))?,
                None => None,
            };
            keys.push(endpoint.map(|endpoint| endpoint.key));
        }
        let found: Vec<u64> = keys.iter().flatten().copied().collect();
        let mut counted = tables::delivery_counts(rtxn, dbs, &found, day, per_row)?.into_iter();
        Ok(keys
            .iter()
            .map(|key| match key {
                Some(_) => counted.next().unwrap_or_default(),
                None => tables::DeliveryCounts::default(),
            })
            .collect())
    })?)
}

/// "N succeeded · M failed" (with "+" when the count stopped at its budget).
fn day_counts(b: &mut Html, counts: tables::DeliveryCounts) {
    let more = if counts.cut { "+" } else { "" };
    b.num(counts.success)
        .raw(more)
        .raw(" succeeded · ")
        .num(counts.fail)
        .raw(more)
        .raw(" failed");
}

fn endpoint_path(v: &Visit<'_>, ep: &str) -> String {
    format!("app/{}/endpoint/{}", seg(&v.app_id), seg(ep))
}

fn status_class(text: &str) -> &'static str {
    match text {
        "success" => "ok",
        "fail" => "bad",
        _ => "warn",
    }
}

fn status_word(text: &str) -> &'static str {
    match text {
        "success" => "Succeeded",
        "fail" => "Failed",
        "pending" => "Pending",
        _ => "Sending",
    }
}

/// 1 — the application's endpoints.
async fn endpoints(v: &Visit<'_>) -> Result<Answer, ApiError> {
    let app = v
        .api(Method::GET, &format!("app/{}", seg(&v.app_id)), "", None)
        .await?;
    let list = v
        .api(
            Method::GET,
            &format!("app/{}/endpoint", seg(&v.app_id)),
            &format!("limit={PORTAL_PAGE_ROWS_MAX}"),
            None,
        )
        .await?;
    let mut b = Html::new();
    b.raw("<h1>Endpoints</h1><p class=\"muted\">")
        .text(s(&app, "name"))
        .raw("</p>");
    if v.can(cap::MANAGE_ENDPOINT) {
        b.raw("<p><a class=\"button\" href=\"/portal/endpoints/new\">Add endpoint</a></p>");
    }
    let rows = data(&list);
    if rows.is_empty() {
        b.raw("<div class=\"notice\">No endpoints yet.</div>");
    } else {
        let counts = day_counts_of(v, rows)?;
        b.raw("<table><caption class=\"muted\">Endpoints</caption><thead><tr><th scope=\"col\">URL</th>")
            .raw("<th scope=\"col\">Description</th><th scope=\"col\">Status</th>")
            .raw("<th scope=\"col\">Last 24 hours</th></tr></thead><tbody>");
        for (e, counts) in rows.iter().zip(counts) {
            b.raw("<tr><td>")
                .link(
                    &format!("/portal/endpoints/{}", seg(s(e, "id"))),
                    s(e, "url"),
                )
                .raw("</td><td>")
                .text(s(e, "description"))
                .raw("</td><td>")
                .raw(if e["disabled"].as_bool() == Some(true) {
                    "<span class=\"bad\">Disabled</span>"
                } else {
                    "<span class=\"ok\">Enabled</span>"
                })
                .raw("</td><td>");
            day_counts(&mut b, counts);
            b.raw("</td></tr>");
        }
        b.raw("</tbody></table>");
    }
    Ok(page(v, "Endpoints", &b))
}

/// The visible event types (flag-filtered by the API), at most a page of them.
async fn visible_event_types(v: &Visit<'_>, with_content: bool) -> Result<Vec<Value>, ApiError> {
    let list = v
        .api(
            Method::GET,
            "event-type",
            &format!("limit={PORTAL_PAGE_ROWS_MAX}&with_content={with_content}"),
            None,
        )
        .await?;
    Ok(data(&list).to_vec())
}

/// The group of a dotted event type name: what comes before its last dot.
fn group_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("other", |(g, _)| g)
}

/// 2 — add an endpoint (event types grouped by dotted prefix; none chosen = all).
async fn new_endpoint(v: &Visit<'_>, problem: Option<&str>) -> Result<Answer, ApiError> {
    if !v.can(cap::MANAGE_ENDPOINT) {
        return Err(ApiError::Forbidden);
    }
    let types = visible_event_types(v, false).await?;
    let mut b = Html::new();
    b.raw("<h1>Add endpoint</h1>");
    if let Some(problem) = problem {
        b.raw("<div class=\"banner\" role=\"alert\">")
            .text(problem)
            .raw("</div>");
    }
    b.raw("<form method=\"post\" action=\"/portal/endpoints/new\">");
    hidden_csrf(&mut b, &v.csrf);
    b.raw("<label for=\"url\">Endpoint URL</label>")
        .raw("<input id=\"url\" name=\"url\" type=\"url\" required placeholder=\"https://\" value=\"")
        .text(v.field("url").unwrap_or(""))
        .raw("\"><label for=\"description\">Description</label>")
        .raw("<input id=\"description\" name=\"description\" type=\"text\" value=\"")
        .text(v.field("description").unwrap_or(""))
        .raw("\"><h2>Subscribe to events</h2><p class=\"muted\">Choose none to receive all events.</p>");
    event_type_boxes(&mut b, &types, &[]);
    b.raw("<p><button type=\"submit\">Create endpoint</button></p></form>");
    Ok(page(v, "Add endpoint", &b))
}

/// The event types as checkboxes grouped by dotted prefix, `chosen` ticked.
fn event_type_boxes(b: &mut Html, types: &[Value], chosen: &[&str]) {
    let mut groups: Vec<(&str, Vec<&Value>)> = Vec::new();
    for t in types {
        let group = group_of(s(t, "name"));
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, items)) => items.push(t),
            None => groups.push((group, vec![t])),
        }
    }
    for (group, items) in groups {
        b.raw("<fieldset><legend>").text(group).raw("</legend>");
        for t in items {
            let name = s(t, "name");
            b.raw("<label class=\"check\"><input type=\"checkbox\" name=\"filterTypes\" value=\"")
                .text(name)
                .raw("\"");
            if chosen.contains(&name) {
                b.raw(" checked");
            }
            b.raw("> ").text(name).raw("</label>");
        }
        b.raw("</fieldset>");
    }
}

/// 4 — an endpoint's settings: URL, description, event types; custom headers (values
/// never shown: they often carry credentials).
async fn settings(v: &Visit<'_>, ep: &str, problem: Option<&str>) -> Result<Answer, ApiError> {
    if !v.can(cap::MANAGE_ENDPOINT) {
        return Err(ApiError::Forbidden);
    }
    let e = v.api(Method::GET, &endpoint_path(v, ep), "", None).await?;
    let headers = v
        .api(
            Method::GET,
            &format!("{}/headers", endpoint_path(v, ep)),
            "",
            None,
        )
        .await?;
    let types = visible_event_types(v, false).await?;
    let id = s(&e, "id").to_owned();
    let chosen: Vec<&str> = e["filterTypes"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut b = Html::new();
    b.raw("<h1>Settings</h1><p>")
        .link(&format!("/portal/endpoints/{}", seg(&id)), s(&e, "url"))
        .raw("</p>");
    if let Some(problem) = problem {
        b.raw("<div class=\"banner\" role=\"alert\">")
            .text(problem)
            .raw("</div>");
    }
    b.raw("<form method=\"post\" action=\"/portal/endpoints/")
        .text(&seg(&id))
        .raw("/edit\">");
    hidden_csrf(&mut b, &v.csrf);
    b.raw("<label for=\"url\">Endpoint URL</label><input id=\"url\" name=\"url\" type=\"url\" required value=\"")
        .text(s(&e, "url"))
        .raw("\"><label for=\"description\">Description</label>")
        .raw("<input id=\"description\" name=\"description\" type=\"text\" value=\"")
        .text(s(&e, "description"))
        .raw("\"><h2>Subscribe to events</h2><p class=\"muted\">Choose none to receive all events.</p>");
    event_type_boxes(&mut b, &types, &chosen);
    b.raw("<p><button type=\"submit\">Save settings</button></p></form><h2>Custom headers</h2>");
    headers_section(&mut b, v, &id, &headers);
    Ok(page(v, "Settings", &b))
}

/// The custom headers' names (values masked) and the form that sets one.
fn headers_section(b: &mut Html, v: &Visit<'_>, id: &str, headers: &Value) {
    let mut names: Vec<&str> = headers["headers"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    names.extend(
        headers["sensitive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    );
    if names.is_empty() {
        b.raw("<p class=\"muted\">None.</p>");
    } else {
        b.raw("<table><thead><tr><th scope=\"col\">Header</th><th scope=\"col\">Value</th></tr></thead><tbody>");
        for name in names {
            b.raw("<tr><td><code>")
                .text(name)
                .raw("</code></td><td>••••••</td></tr>");
        }
        b.raw("</tbody></table>");
    }
    b.raw("<form method=\"post\" action=\"/portal/endpoints/")
        .text(&seg(id))
        .raw("/headers\">");
    hidden_csrf(b, &v.csrf);
    b.raw("<label for=\"header-name\">Header name</label><input id=\"header-name\" name=\"name\" type=\"text\" required>")
        .raw("<label for=\"header-value\">Header value (empty removes it)</label>")
        .raw("<input id=\"header-value\" name=\"value\" type=\"text\">")
        .raw("<p><button type=\"submit\" class=\"secondary\">Set header</button></p></form>");
}

async fn save_settings(v: &Visit<'_>, ep: &str) -> Result<Answer, ApiError> {
    let types: Vec<&str> = v.fields("filterTypes");
    let body = json!({
        "url": v.field("url").unwrap_or("").trim(),
        "description": v.field("description").unwrap_or(""),
        "filterTypes": if types.is_empty() { Value::Null } else { json!(types) },
    });
    match v
        .api(Method::PATCH, &endpoint_path(v, ep), "", Some(body))
        .await
    {
        Ok(_) => Ok(Answer::Redirect(format!("/portal/endpoints/{}", seg(ep)))),
        Err(e @ (ApiError::Validation(_) | ApiError::BadRequest { .. })) => {
            let text = String::from_utf8_lossy(&e.body()).into_owned();
            let mut answer = settings(v, ep, Some(&text)).await?;
            if let Answer::Page(status, _) = &mut answer {
                *status = StatusCode::UNPROCESSABLE_ENTITY;
            }
            Ok(answer)
        }
        Err(e) => Err(e),
    }
}

async fn create_endpoint(v: &Visit<'_>) -> Result<Answer, ApiError> {
    let types: Vec<&str> = v.fields("filterTypes");
    let mut body = json!({
        "url": v.field("url").unwrap_or("").trim(),
        "description": v.field("description").unwrap_or(""),
    });
    if !types.is_empty() {
        body["filterTypes"] = json!(types);
    }
    let path = format!("app/{}/endpoint", seg(&v.app_id));
    match v.api(Method::POST, &path, "", Some(body)).await {
        Ok(created) => Ok(Answer::Redirect(format!(
            "/portal/endpoints/{}",
            seg(s(&created, "id"))
        ))),
        Err(e @ (ApiError::Validation(_) | ApiError::BadRequest { .. })) => {
            let text = String::from_utf8_lossy(&e.body()).into_owned();
            let mut answer = new_endpoint(v, Some(&text)).await?;
            if let Answer::Page(status, _) = &mut answer {
                *status = StatusCode::UNPROCESSABLE_ENTITY;
            }
            Ok(answer)
        }
        Err(e) => Err(e),
    }
}

/// Success and failure counts of the endpoint per hour over the last 24 hours.
/// The endpoint's stats over the last 24 hours, and its successes and failures per hour
/// of them, oldest first: one scan of the day's deliveries (the stats' `buckets`).
async fn day_stats(v: &Visit<'_>, ep: &str) -> Result<(Value, Vec<(u64, u64)>), ApiError> {
    let now = v.state.clock.now_ms();
    let path = format!("{}/stats", endpoint_path(v, ep));
    let q = format!(
        "since={}&until={}&buckets=24",
        seg(&format_rfc3339((now + 1).saturating_sub(24 * HOUR_MS))),
        seg(&format_rfc3339(now + 1))
    );
    let stats = v.api(Method::GET, &path, &q, None).await?;
    let hours = stats["buckets"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|span| (n(span, "success"), n(span, "fail")))
                .collect()
        })
        .unwrap_or_default();
    Ok((stats, hours))
}

/// A bar chart (SVG, drawn here) of successes over failures per hour.
fn chart(b: &mut Html, hours: &[(u64, u64)]) {
    let top = hours.iter().map(|(s, f)| s + f).max().unwrap_or(0).max(1);
    let (ok, bad): (u64, u64) = hours.iter().fold((0, 0), |(a, c), (s, f)| (a + s, c + f));
    b.raw("<svg class=\"chart\" viewBox=\"0 0 480 120\" role=\"img\" aria-label=\"Deliveries in the last 24 hours: ")
        .num(ok)
        .raw(" succeeded, ")
        .num(bad)
        .raw(" failed\">");
    for (i, (s, f)) in hours.iter().enumerate() {
        let x = i as u64 * 20 + 2;
        let hs = s * 100 / top;
        let hf = f * 100 / top;
        b.raw("<rect class=\"s\" x=\"")
            .num(x)
            .raw("\" y=\"")
            .num(110 - hs)
            .raw("\" width=\"16\" height=\"")
            .num(hs)
            .raw("\"></rect><rect class=\"f\" x=\"")
            .num(x)
            .raw("\" y=\"")
            .num(110 - hs - hf)
            .raw("\" width=\"16\" height=\"")
            .num(hf)
            .raw("\"></rect>");
    }
    b.raw("<line class=\"axis\" x1=\"0\" y1=\"110\" x2=\"480\" y2=\"110\"></line></svg>");
}

/// 3 — an endpoint: stats, chart, disabled banner, actions, recent attempts.
#[expect(clippy::too_many_lines, reason = "the page's markup, top to bottom")]
async fn endpoint(v: &Visit<'_>, ep: &str) -> Result<Answer, ApiError> {
    let e = v.api(Method::GET, &endpoint_path(v, ep), "", None).await?;
    let id = s(&e, "id").to_owned();
    let (stats, hours) = day_stats(v, ep).await?;
    let attempts = v
        .api(
            Method::GET,
            &format!("app/{}/attempt/endpoint/{}", seg(&v.app_id), seg(&id)),
            &format!("limit={PORTAL_PAGE_ROWS_MAX}&with_content=false"),
            None,
        )
        .await?;
    let disabled = e["disabled"].as_bool() == Some(true);
    let mut b = Html::new();
    b.raw("<h1>Endpoint</h1>");
    if disabled {
        b.raw("<div class=\"banner\" role=\"alert\">This endpoint is disabled: nothing is sent ")
            .raw("to it until it is enabled again.");
        // Set when Sluice disabled it (failing too long), not when someone did.
        if let Some(reason) = e["disabledReason"].as_str() {
            b.raw(" Sluice disabled it at ")
                .text(s(&e, "disabledAt"))
                .raw(": ")
                .text(reason)
                .raw(".");
        }
        b.raw("</div>");
    }
    b.raw("<dl><dt>URL</dt><dd><code>")
        .text(s(&e, "url"))
        .raw("</code></dd><dt>Description</dt><dd>")
        .text(s(&e, "description"))
        .raw("</dd><dt>Events</dt><dd>");
    match e["filterTypes"].as_array() {
        Some(types) if !types.is_empty() => {
            let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            b.text(&names.join(", "));
        }
        _ => {
            b.raw("All events");
        }
    }
    b.raw("</dd><dt>Created</dt><dd>")
        .text(s(&e, "createdAt"))
        .raw("</dd><dt>Id</dt><dd><code>")
        .text(&id)
        .raw("</code></dd></dl>");
    b.raw("<div class=\"row\">")
        .link(
            &format!("/portal/endpoints/{}/secret", seg(&id)),
            "Signing secret",
        )
        .raw(" ");
    if v.can(cap::CREATE_ATTEMPTS) {
        b.link(&format!("/portal/endpoints/{}/test", seg(&id)), "Testing")
            .raw(" ");
    }
    if v.can(cap::MANAGE_ENDPOINT) {
        b.link(&format!("/portal/endpoints/{}/edit", seg(&id)), "Settings");
    }
    b.raw("</div><h2>Last 24 hours</h2><p>")
        .num(n(&stats, "success"))
        .raw(" succeeded · ")
        .num(n(&stats, "fail"))
        .raw(" failed · ")
        .num(n(&stats, "pending") + n(&stats, "sending"))
        .raw(" pending</p>");
    chart(&mut b, &hours);
    if v.can(cap::MANAGE_ENDPOINT) || v.can(cap::CREATE_ATTEMPTS) {
        b.raw("<h2>Actions</h2><div class=\"row\">");
    }
    if v.can(cap::MANAGE_ENDPOINT) {
        let (action, label) = if disabled {
            ("enable", "Enable endpoint")
        } else {
            ("disable", "Disable endpoint")
        };
        form_button(
            &mut b,
            v,
            &format!("/portal/endpoints/{}/{action}", seg(&id)),
            label,
            "secondary",
            None,
        );
        form_button(
            &mut b,
            v,
            &format!("/portal/endpoints/{}/delete", seg(&id)),
            "Delete endpoint",
            "danger",
            Some("Delete this endpoint?"),
        );
    }
    if v.can(cap::CREATE_ATTEMPTS) {
        b.raw("<form class=\"inline\" method=\"post\" action=\"/portal/endpoints/")
            .text(&seg(&id))
            .raw("/recover\">");
        hidden_csrf(&mut b, &v.csrf);
        b.raw("<label for=\"since\" class=\"check\">Recover failed messages since</label>")
            .raw("<select id=\"since\" name=\"since\"><option value=\"8\">8 hours ago</option>")
            .raw("<option value=\"24\">yesterday</option><option value=\"72\">3 days ago</option>")
            .raw("<option value=\"168\">last week</option><option value=\"336\">2 weeks ago</option></select> ")
            .raw("<label for=\"kind\" class=\"check\">Send</label>")
            .raw("<select id=\"kind\" name=\"kind\"><option value=\"recover\">failed messages again</option>")
            .raw("<option value=\"replay-missing\">messages never sent to it</option></select> ")
            .raw("<button type=\"submit\">Recover failed messages</button></form>");
    }
    if v.can(cap::MANAGE_ENDPOINT) || v.can(cap::CREATE_ATTEMPTS) {
        b.raw("</div>");
    }
    if let Some(task) = v.query_param("task") {
        let t = v
            .api(
                Method::GET,
                &format!("background-task/{}", seg(&task)),
                "",
                None,
            )
            .await?;
        b.raw("<div class=\"notice\" role=\"status\">")
            .raw(if s(&t, "task") == "endpoint.replay" {
                "Replay "
            } else {
                "Recovery "
            })
            .text(s(&t, "status"))
            .raw(". Messages sent: ")
            .num(n(&t["data"], "messagesSent"))
            .raw(".</div>");
    }
    b.raw("<h2>Attempts</h2>");
    attempts_table(&mut b, data(&attempts), true);
    Ok(page(v, "Endpoint", &b))
}

fn form_button(
    b: &mut Html,
    v: &Visit<'_>,
    action: &str,
    label: &str,
    class: &'static str,
    confirm: Option<&str>,
) {
    b.raw("<form class=\"inline\" method=\"post\" action=\"")
        .text(action)
        .raw("\"");
    if let Some(q) = confirm {
        b.raw(" data-confirm=\"").text(q).raw("\"");
    }
    b.raw(">");
    hidden_csrf(b, &v.csrf);
    b.raw("<button type=\"submit\" class=\"")
        .raw(class)
        .raw("\">")
        .text(label)
        .raw("</button></form> ");
}

fn attempts_table(b: &mut Html, rows: &[Value], with_message: bool) {
    if rows.is_empty() {
        b.raw("<p class=\"muted\">No attempts yet.</p>");
        return;
    }
    b.raw("<table><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Status</th>")
        .raw("<th scope=\"col\">Response</th>");
    if with_message {
        b.raw("<th scope=\"col\">Message</th>");
    }
    b.raw("<th scope=\"col\">Attempt</th></tr></thead><tbody>");
    for a in rows {
        let ok = n(a, "status") == 0;
        let msg = s(a, "msgId");
        b.raw("<tr><td>")
            .text(s(a, "timestamp"))
            .raw("</td><td class=\"")
            .raw(if ok { "ok" } else { "bad" })
            .raw("\">")
            .raw(if ok { "Succeeded" } else { "Failed" })
            .raw("</td><td>")
            .num(n(a, "responseStatusCode"))
            .raw("</td>");
        if with_message {
            b.raw("<td>")
                .link(&format!("/portal/messages/{}", seg(msg)), msg)
                .raw("</td>");
        }
        b.raw("<td>")
            .link(
                &format!("/portal/messages/{}/attempts/{}", seg(msg), seg(s(a, "id"))),
                s(a, "id"),
            )
            .raw("</td></tr>");
    }
    b.raw("</tbody></table>");
}

/// 7 — recover failed messages, or replay missing ones, since a preset; the page then
/// shows the background task's progress.
async fn recover(v: &Visit<'_>, ep: &str) -> Result<Answer, ApiError> {
    let hours: u64 = v
        .field("since")
        .and_then(|h| h.parse().ok())
        .filter(|h| (1..=336).contains(h))
        .unwrap_or(24);
    let since = format_rfc3339(v.state.clock.now_ms().saturating_sub(hours * HOUR_MS));
    let kind = if v.field("kind") == Some("replay-missing") {
        "replay-missing"
    } else {
        "recover"
    };
    let path = format!("{}/{kind}", endpoint_path(v, ep));
    let task = v
        .api(Method::POST, &path, "", Some(json!({"since": since})))
        .await?;
    Ok(Answer::Redirect(format!(
        "/portal/endpoints/{}?task={}",
        seg(ep),
        seg(s(&task, "id"))
    )))
}

/// "Replay from here" (Svix's "replay all failed messages since this time"): recover the
/// endpoint's failed messages since this message's time; the endpoint's page then shows
/// the task's progress.
async fn recover_from(v: &Visit<'_>, msg: &str, ep: &str) -> Result<Answer, ApiError> {
    let m = v
        .api(
            Method::GET,
            &format!("app/{}/msg/{}", seg(&v.app_id), seg(msg)),
            "with_content=false",
            None,
        )
        .await?;
    let path = format!("{}/recover", endpoint_path(v, ep));
    let task = v
        .api(
            Method::POST,
            &path,
            "",
            Some(json!({"since": s(&m, "timestamp")})),
        )
        .await?;
    Ok(Answer::Redirect(format!(
        "/portal/endpoints/{}?task={}",
        seg(ep),
        seg(s(&task, "id"))
    )))
}

/// 5 — the signing secret: masked; revealed on request with the capability; rotated.
async fn secret(v: &Visit<'_>, ep: &str) -> Result<Answer, ApiError> {
    let e = v.api(Method::GET, &endpoint_path(v, ep), "", None).await?;
    let id = s(&e, "id").to_owned();
    let may_view =
        v.can(cap::VIEW_ENDPOINT_SECRET | cap::MANAGE_ENDPOINT_SECRET | cap::MANAGE_ENDPOINT);
    let mut b = Html::new();
    b.raw("<h1>Signing secret</h1><p>")
        .link(&format!("/portal/endpoints/{}", seg(&id)), s(&e, "url"))
        .raw("</p>");
    if v.query_param("rotated").is_some() {
        b.raw("<div class=\"notice\" role=\"status\">The secret was rotated. The previous one ")
            .raw("keeps signing alongside it for the grace period you chose.</div>");
    }
    let revealed = if may_view && v.query_param("reveal").is_some() {
        let key = v
            .api(
                Method::GET,
                &format!("{}/secret", endpoint_path(v, ep)),
                "",
                None,
            )
            .await?;
        Some(s(&key, "key").to_owned())
    } else {
        None
    };
    b.raw("<div class=\"panel\"><code aria-label=\"Signing secret\">");
    match &revealed {
        Some(key) => {
            b.text(key);
        }
        // No kind prefix: a masked secret may be an HMAC `whsec_` or an Ed25519 pair,
        // whose revealed form is its public key (`whpk_`).
        None => {
            b.raw("••••••••••••••••••••••••");
        }
    }
    b.raw("</code></div>");
    if may_view && revealed.is_none() {
        b.raw("<p><a class=\"button\" href=\"/portal/endpoints/")
            .text(&seg(&id))
            .raw("/secret?reveal=1\">Reveal secret</a></p>");
    }
    if v.can(cap::MANAGE_ENDPOINT_SECRET | cap::MANAGE_ENDPOINT) {
        b.raw("<h2>Rotate</h2><form method=\"post\" action=\"/portal/endpoints/")
            .text(&seg(&id))
            .raw("/secret/rotate\" data-confirm=\"Rotate the signing secret?\">");
        hidden_csrf(&mut b, &v.csrf);
        b.raw("<label for=\"grace\">Keep the old secret signing for</label>")
            .raw("<select id=\"grace\" name=\"grace\"><option value=\"0\">no time</option>")
            .raw("<option value=\"3600\">1 hour</option><option value=\"86400\" selected>24 hours</option>")
            .raw("<option value=\"604800\">7 days</option></select>")
            .raw("<p><button type=\"submit\">Rotate secret</button></p></form>");
    }
    b.raw("<h2>Verifying</h2><p>Every request carries <code>webhook-id</code>, ")
        .raw("<code>webhook-timestamp</code> and <code>webhook-signature</code> headers ")
        .raw("(Standard Webhooks). Verify them with the secret above using any Standard ")
        .raw("Webhooks or Svix library: a <code>whsec_</code> secret signs with HMAC-SHA256 ")
        .raw("(<code>v1,</code>), a <code>whpk_</code> public key verifies Ed25519 ")
        .raw("signatures (<code>v1a,</code>). During a rotation's grace period requests ")
        .raw("carry a signature for each secret.</p>");
    Ok(page(v, "Signing secret", &b))
}

/// 6 — send an example event to the endpoint.
async fn testing(v: &Visit<'_>, ep: &str) -> Result<Answer, ApiError> {
    if !v.can(cap::CREATE_ATTEMPTS) {
        return Err(ApiError::Forbidden);
    }
    let e = v.api(Method::GET, &endpoint_path(v, ep), "", None).await?;
    let types = visible_event_types(v, true).await?;
    let mut b = Html::new();
    b.raw("<h1>Testing</h1><p>")
        .link(
            &format!("/portal/endpoints/{}", seg(s(&e, "id"))),
            s(&e, "url"),
        )
        .raw("</p><form method=\"post\" action=\"/portal/endpoints/")
        .text(&seg(s(&e, "id")))
        .raw("/test\">");
    hidden_csrf(&mut b, &v.csrf);
    b.raw(
        "<label for=\"eventType\">Event type</label><select id=\"eventType\" name=\"eventType\">",
    )
    .raw("<option value=\"svix.ping\">svix.ping</option>");
    for t in &types {
        let has_example = t["schemas"]["1"]["examples"]
            .as_array()
            .is_some_and(|x| !x.is_empty());
        if has_example {
            b.raw("<option value=\"")
                .text(s(t, "name"))
                .raw("\">")
                .text(s(t, "name"))
                .raw("</option>");
        }
    }
    b.raw("</select><p><button type=\"submit\">Send example</button></p></form>");
    Ok(page(v, "Testing", &b))
}

/// 8 — the application's messages, newest first.
async fn messages(v: &Visit<'_>) -> Result<Answer, ApiError> {
    let mut q = format!("limit={PORTAL_PAGE_ROWS_MAX}&with_content=false");
    if let Some(t) = v.query_param("event_type").filter(|t| !t.is_empty()) {
        q.push_str("&event_types=");
        q.push_str(&seg(&t));
    }
    // Svix's presets: since 5 hours ago, yesterday, last week, last month.
    let since_hours: Option<u64> = v
        .query_param("since")
        .and_then(|h| h.parse().ok())
        .filter(|h| [5, 24, 168, 720].contains(h));
    if let Some(hours) = since_hours {
        let after = v.state.clock.now_ms().saturating_sub(hours * HOUR_MS);
        q.push_str("&after=");
        q.push_str(&seg(&format_rfc3339(after)));
    }
    let list = v
        .api(
            Method::GET,
            &format!("app/{}/msg", seg(&v.app_id)),
            &q,
            None,
        )
        .await?;
    let mut b = Html::new();
    b.raw("<h1>Messages</h1><form method=\"get\" action=\"/portal/messages\" class=\"row\">")
        .raw("<label for=\"event_type\" class=\"check\">Event type</label>")
        .raw("<input id=\"event_type\" name=\"event_type\" type=\"text\" value=\"")
        .text(&v.query_param("event_type").unwrap_or_default())
        .raw("\"> <label for=\"since\" class=\"check\">Since</label><select id=\"since\" name=\"since\">");
    for (hours, label) in [
        (0, "any time"),
        (5, "5 hours ago"),
        (24, "yesterday"),
        (168, "last week"),
        (720, "last month"),
    ] {
        b.raw("<option value=\"").num(hours).raw("\"");
        if since_hours == Some(hours) {
            b.raw(" selected");
        }
        b.raw(">").raw(label).raw("</option>");
    }
    b.raw("</select> <button type=\"submit\" class=\"secondary\">Filter</button></form>");
    let rows = data(&list);
    if rows.is_empty() {
        b.raw("<p class=\"muted\">No messages.</p>");
    } else {
        b.raw("<table><thead><tr><th scope=\"col\">Message</th><th scope=\"col\">Event type</th>")
            .raw("<th scope=\"col\">Created</th></tr></thead><tbody>");
        for m in rows {
            b.raw("<tr><td>")
                .link(&format!("/portal/messages/{}", seg(s(m, "id"))), s(m, "id"))
                .raw("</td><td>")
                .text(s(m, "eventType"))
                .raw("</td><td>")
                .text(s(m, "timestamp"))
                .raw("</td></tr>");
        }
        b.raw("</tbody></table>");
    }
    Ok(page(v, "Messages", &b))
}

/// 9 — one message: payload, status per endpoint with resend, its attempts.
#[expect(clippy::too_many_lines, reason = "the page's markup, top to bottom")]
async fn message(v: &Visit<'_>, msg: &str) -> Result<Answer, ApiError> {
    let app = seg(&v.app_id);
    let m = v
        .api(
            Method::GET,
            &format!("app/{app}/msg/{}", seg(msg)),
            "with_content=true",
            None,
        )
        .await?;
    let id = s(&m, "id").to_owned();
    let destinations = v
        .api(
            Method::GET,
            &format!("app/{app}/msg/{}/endpoint", seg(&id)),
            &format!("limit={PORTAL_PAGE_ROWS_MAX}"),
            None,
        )
        .await?;
    let attempts = v
        .api(
            Method::GET,
            &format!("app/{app}/attempt/msg/{}", seg(&id)),
            &format!("limit={PORTAL_PAGE_ROWS_MAX}&with_content=false"),
            None,
        )
        .await?;
    let mut b = Html::new();
    b.raw("<h1>Message</h1><dl><dt>Id</dt><dd><code>")
        .text(&id)
        .raw("</code></dd><dt>Event type</dt><dd>")
        .text(s(&m, "eventType"))
        .raw("</dd><dt>Created</dt><dd>")
        .text(s(&m, "timestamp"))
        .raw("</dd></dl>");
    if v.query_param("resent").is_some() {
        b.raw("<div class=\"notice\" role=\"status\">Sent again.</div>");
    }
    b.raw("<h2>Payload</h2><pre aria-label=\"Payload\">");
    let pretty = serde_json::to_string_pretty(&m["payload"]).unwrap_or_default();
    let (shown, _) = cut(&pretty, PORTAL_BODY_SHOWN_BYTES_MAX);
    b.text(shown).raw("</pre><h2>Endpoints</h2>");
    let rows = data(&destinations);
    if rows.is_empty() {
        b.raw("<p class=\"muted\">Sent to no endpoint.</p>");
    } else {
        b.raw("<table><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">Status</th>")
            .raw("<th scope=\"col\">Next attempt</th><th scope=\"col\">Action</th></tr></thead><tbody>");
        for d in rows {
            let text = s(d, "statusText");
            b.raw("<tr><td>")
                .link(
                    &format!("/portal/endpoints/{}", seg(s(d, "id"))),
                    s(d, "url"),
                )
                .raw("</td><td class=\"")
                .raw(status_class(text))
                .raw("\">")
                .raw(status_word(text))
                .raw("</td><td>")
                .text(s(d, "nextAttempt"))
                .raw("</td><td>");
            if v.can(cap::CREATE_ATTEMPTS) {
                form_button(
                    &mut b,
                    v,
                    &format!("/portal/messages/{}/resend/{}", seg(&id), seg(s(d, "id"))),
                    "Resend",
                    "secondary",
                    None,
                );
                form_button(
                    &mut b,
                    v,
                    &format!("/portal/messages/{}/recover/{}", seg(&id), seg(s(d, "id"))),
                    "Recover failed from here",
                    "secondary",
                    Some("Send this endpoint's failed messages again, from this one on?"),
                );
            }
            b.raw("</td></tr>");
        }
        b.raw("</tbody></table>");
    }
    b.raw("<h2>Attempts</h2>");
    attempts_table(&mut b, data(&attempts), false);
    Ok(page(v, "Message", &b))
}

/// 10 — one attempt, with the receiver's response body as escaped text.
async fn attempt_page(v: &Visit<'_>, msg: &str, attempt: &str) -> Result<Answer, ApiError> {
    let a = v
        .api(
            Method::GET,
            &format!(
                "app/{}/msg/{}/attempt/{}",
                seg(&v.app_id),
                seg(msg),
                seg(attempt)
            ),
            "",
            None,
        )
        .await?;
    let ok = n(&a, "status") == 0;
    let mut b = Html::new();
    b.raw("<h1>Attempt</h1><dl><dt>Status</dt><dd class=\"")
        .raw(if ok { "ok" } else { "bad" })
        .raw("\">")
        .raw(if ok { "Succeeded" } else { "Failed" })
        .raw("</dd><dt>Response status</dt><dd>")
        .num(n(&a, "responseStatusCode"))
        .raw("</dd><dt>Duration</dt><dd>")
        .num(n(&a, "responseDurationMs"))
        .raw(" ms</dd><dt>Trigger</dt><dd>")
        .raw(if n(&a, "triggerType") == 1 {
            "manual"
        } else {
            "scheduled"
        })
        .raw("</dd><dt>When</dt><dd>")
        .text(s(&a, "timestamp"))
        .raw("</dd><dt>URL</dt><dd><code>")
        .text(s(&a, "url"))
        .raw("</code></dd><dt>Message</dt><dd>")
        .link(
            &format!("/portal/messages/{}", seg(s(&a, "msgId"))),
            s(&a, "msgId"),
        )
        .raw("</dd></dl><h2>Response body</h2><pre aria-label=\"Response body\">");
    let (shown, was_cut) = cut(s(&a, "response"), PORTAL_BODY_SHOWN_BYTES_MAX);
    b.text(shown).raw("</pre>");
    if was_cut {
        b.raw("<p class=\"muted\">Cut short.</p>");
    }
    Ok(page(v, "Attempt", &b))
}

/// 11 — the event catalogue (flag-filtered), with each type's example.
async fn event_types(v: &Visit<'_>) -> Result<Answer, ApiError> {
    let types = visible_event_types(v, true).await?;
    let mut b = Html::new();
    b.raw("<h1>Event catalogue</h1>");
    if types.is_empty() {
        b.raw("<p class=\"muted\">No event types.</p>");
    }
    for t in &types {
        b.raw("<section class=\"panel\"><h2>")
            .text(s(t, "name"))
            .raw("</h2>");
        if t["deprecated"].as_bool() == Some(true) {
            b.raw("<p class=\"warn\">Deprecated</p>");
        }
        b.raw("<p>").text(s(t, "description")).raw("</p>");
        if let Some(example) = t["schemas"]["1"]["examples"].get(0) {
            let pretty = serde_json::to_string_pretty(example).unwrap_or_default();
            b.raw("<h3>Example</h3><pre>")
                .text(cut(&pretty, PORTAL_BODY_SHOWN_BYTES_MAX).0)
                .raw("</pre>");
        }
        b.raw("</section>");
    }
    Ok(page(v, "Event catalogue", &b))
}
