//! The tenant portal at `/portal`: server-rendered pages a platform's customers use to
//! manage their endpoints and watch their deliveries, served by the API listener.
//!
//! Access: an access link (`api::portal_access`) carries a login code in its fragment;
//! `/portal/login`'s script posts it to `/portal/session`, which exchanges it (an op) for
//! a session cookie. The cookie is `HttpOnly`, `SameSite=Strict`, and over TLS (this
//! listener's, or a `public_url` on `https:`) `Secure` with the `__Host-` prefix; over
//! plain HTTP it is named without the prefix, because browsers refuse a `__Host-` cookie
//! that is not `Secure`, and refuse `Secure` cookies from `http:` origins. Every form
//! carries a CSRF token derived from the session (a keyed hash of it), checked on every
//! POST, and a POST whose `Origin` is another origin is refused.
//!
//! Every page reads and writes through `api::call_as`: the REST routes' handlers, their
//! capability check and their ops, on behalf of the session's grant. So the portal and
//! the API cannot disagree, and a hidden button is only cosmetic: the server refuses.

mod html;
mod pages;

use std::net::IpAddr;
use std::sync::LazyLock;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::api::{ApiError, ApiState, Auth};
use crate::limits::{PORTAL_FORM_BYTES_MAX, URI_LEN_MAX};
use crate::log::schema::TokenScope;

/// Whether `path` is the portal's.
pub fn serves(path: &str) -> bool {
    path == "/portal" || path.starts_with("/portal/")
}

/// An embedded file: its bytes, type and content-hash ETag.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

fn etag_of(body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

static CSS: LazyLock<Asset> = LazyLock::new(|| {
    let body = include_bytes!("assets/portal.css");
    Asset {
        body,
        content_type: "text/css; charset=utf-8",
        etag: etag_of(body),
    }
});
static JS: LazyLock<Asset> = LazyLock::new(|| {
    let body = include_bytes!("assets/portal.js");
    Asset {
        body,
        content_type: "text/javascript; charset=utf-8",
        etag: etag_of(body),
    }
});

/// Svix's per-link look (`darkMode`, `primaryColor`, `primaryColorLight`,
/// `primaryColorDark`, `hideNavigation`, `noGutters` on the link's URL), validated, kept
/// in a cookie of its own for the session's pages. Absent values fall back to `[portal]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Theme {
    /// `#rrggbb` without the `#`.
    pub(super) light: Option<String>,
    pub(super) dark: Option<String>,
    /// `Some(true)`: dark, `Some(false)`: light, `None`: the reader's preference.
    pub(super) dark_mode: Option<bool>,
    pub(super) hide_navigation: bool,
    pub(super) no_gutters: bool,
    /// Svix's `icon`: a logo for this link's pages (`https://` only), in place of
    /// `[portal] logo_url`.
    pub(super) icon: Option<String>,
}

fn hex_colour(text: &str) -> Option<String> {
    let hex = text.trim_start_matches('#');
    (hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_owned())
}

impl Theme {
    /// From Svix's query names (a link) or the short names this theme writes itself.
    fn from_pairs(pairs: &[(String, String)]) -> Theme {
        let mut theme = Theme::default();
        for (key, value) in pairs {
            let on = value == "true" || value == "1";
            match key.as_str() {
                "primaryColor" => {
                    theme.light = hex_colour(value);
                    theme.dark.clone_from(&theme.light);
                }
                "primaryColorLight" | "l" => theme.light = hex_colour(value).or(theme.light),
                "primaryColorDark" | "d" => theme.dark = hex_colour(value).or(theme.dark),
                "darkMode" | "m" => theme.dark_mode = Some(on),
                "hideNavigation" | "n" => theme.hide_navigation = on,
                "noGutters" | "g" => theme.no_gutters = on,
                "icon" | "i" => {
                    theme.icon = Some(value.clone()).filter(|url| {
                        matches!(crate::config::image_url_origin(url), Some(Some(_)))
                    });
                }
                _ => {}
            }
        }
        theme
    }

    /// The short form, for the theme cookie and the stylesheet's query.
    pub(super) fn encode(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.light {
            parts.push(format!("l={l}"));
        }
        if let Some(d) = &self.dark {
            parts.push(format!("d={d}"));
        }
        if let Some(m) = self.dark_mode {
            parts.push(format!("m={}", u8::from(m)));
        }
        if self.hide_navigation {
            parts.push("n=1".to_owned());
        }
        if self.no_gutters {
            parts.push("g=1".to_owned());
        }
        if let Some(icon) = &self.icon {
            let encoded =
                percent_encoding::utf8_percent_encode(icon, percent_encoding::NON_ALPHANUMERIC);
            parts.push(format!("i={encoded}"));
        }
        parts.join("&")
    }
}

/// What a portal handler answers.
pub(super) enum Answer {
    Page(StatusCode, String),
    /// 303 to a portal path.
    Redirect(String),
}

/// A request after routing: who, what, and the form it sent.
pub(super) struct Visit<'a> {
    pub(super) state: &'a ApiState,
    pub(super) auth: Auth,
    /// The application the pages show: the session's, or the one an operator chose
    /// (empty until an operator chooses one).
    pub(super) app_id: String,
    /// An operator's session (org-wide, every capability): the list of applications.
    pub(super) operator: bool,
    pub(super) csrf: String,
    pub(super) query: String,
    pub(super) form: Vec<(String, String)>,
    pub(super) theme: Theme,
}

impl Visit<'_> {
    /// An `/api/v1` call as this session.
    pub(super) async fn api(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let reply = crate::api::call_as(self.state, &self.auth, method, path, query, body).await?;
        if reply.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&reply.body).map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub(super) fn can(&self, bits: u8) -> bool {
        self.auth.can(bits)
    }

    pub(super) fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn query_param(&self, name: &str) -> Option<String> {
        parse_form(self.query.as_bytes())
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// `application/x-www-form-urlencoded` (and query strings) into pairs.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Whether session cookies are `Secure` (and `__Host-`): served over TLS here, or
/// reached through an `https:` public URL (TLS ended by a proxy in front).
fn secure(state: &ApiState) -> bool {
    state.tls.get().is_some()
        || state
            .portal
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

fn cookie_name(state: &ApiState) -> &'static str {
    if secure(state) {
        "__Host-sluice_portal"
    } else {
        "sluice_portal"
    }
}

/// The form token of a session: a keyed hash of the session token, which only a page
/// served to that session can show (the cookie is HttpOnly and never leaves the browser
/// for another site).
fn csrf_of(session: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, session.as_bytes());
    let tag = ring::hmac::sign(&key, b"sluice portal form");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..24])
}

fn session_cookie<'h>(state: &ApiState, headers: &'h hyper::HeaderMap) -> Option<&'h str> {
    cookie(headers, cookie_name(state))
}

/// The theme cookie's name (the session's name with `_theme`).
fn theme_cookie_name(state: &ApiState) -> String {
    format!("{}_theme", cookie_name(state))
}

/// The cookie naming the application an operator works on.
fn app_cookie_name(state: &ApiState) -> String {
    format!("{}_app", cookie_name(state))
}

/// A cookie of this portal's (`HttpOnly`, `SameSite=Strict`, `Secure` when served so).
fn portal_cookie(state: &ApiState, name: &str, value: &str, max_age_seconds: u64) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{}",
        if secure(state) { "; Secure" } else { "" }
    )
}

fn cookie<'h>(headers: &'h hyper::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a POST may have come from another site's page: a browser says so in
/// `Sec-Fetch-Site`; else an `Origin` naming another host. (`Origin: null` is what
/// browsers send under `Referrer-Policy: no-referrer`; the form token still guards.)
fn same_origin(headers: &hyper::HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return site != "cross-site";
    }
    let Some(origin) = text(header::ORIGIN).filter(|o| *o != "null") else {
        return true;
    };
    let host = text(header::HOST).unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

/// The headers every portal response carries: CSP without `unsafe-inline`, framing by
/// `[portal] frame_ancestors` only, no referrer, no sniffing, no caching of pages.
fn security_headers(state: &ApiState, response: &mut Response<Full<Bytes>>) {
    set_csp(state, response, None);
    let h = response.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The CSP: images from this server, `[portal] logo_url`'s origin and a link's `icon`'s
/// (both validated as bare `https://` origins), nothing else from anywhere else.
fn set_csp(state: &ApiState, response: &mut Response<Full<Bytes>>, icon: Option<&str>) {
    let ancestors = if state.portal.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        state.portal.frame_ancestors.join(" ")
    };
    let mut images = "'self' data:".to_owned();
    let logo = state.portal.logo_url.as_deref();
    for url in [logo, icon].into_iter().flatten() {
        if let Some(Some(origin)) = crate::config::image_url_origin(url) {
            images.push(' ');
            images.push_str(&origin);
        }
    }
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

fn respond(state: &ApiState, answer: Answer, cookie: Option<String>) -> Response<Full<Bytes>> {
    respond_with(state, answer, cookie.into_iter().collect())
}

fn respond_with(state: &ApiState, answer: Answer, cookies: Vec<String>) -> Response<Full<Bytes>> {
    let mut response = match answer {
        Answer::Page(status, body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Answer::Redirect(to) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for v in cookies.iter().filter_map(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    security_headers(state, &mut response);
    response
}

fn asset(state: &ApiState, asset: &Asset, headers: &hyper::HeaderMap) -> Response<Full<Bytes>> {
    send_asset(
        state,
        Bytes::from_static(asset.body),
        asset.content_type,
        &asset.etag,
        headers,
    )
}

/// A file with its ETag; 304 when the client holds this version.
fn send_asset(
    state: &ApiState,
    body: Bytes,
    content_type: &'static str,
    etag: &str,
    headers: &hyper::HeaderMap,
) -> Response<Full<Bytes>> {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidated each time: one tiny 304, and a new build's files show at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(state, &mut response);
    response
}

/// The theme's colours: `[portal]`'s, or a link's (`?l=&d=` from `Theme::encode`), as a
/// stylesheet (inline styles are not allowed). Made per request: it is a few bytes.
fn theme(state: &ApiState, query: &str, headers: &hyper::HeaderMap) -> Response<Full<Bytes>> {
    let chosen = Theme::from_pairs(&parse_form(query.as_bytes()));
    let light = chosen.light.map_or_else(
        || state.portal.primary_color_light.clone(),
        |c| format!("#{c}"),
    );
    let dark = chosen.dark.map_or_else(
        || state.portal.primary_color_dark.clone(),
        |c| format!("#{c}"),
    );
    let css = format!(
        ":root{{--primary:{light}}}@media (prefers-color-scheme:dark){{html:not(.light){{--primary:{dark}}}}}html.dark{{--primary:{dark}}}\n"
    );
    let etag = etag_of(css.as_bytes());
    send_asset(
        state,
        Bytes::from(css),
        "text/css; charset=utf-8",
        &etag,
        headers,
    )
}

async fn read_form(req: Request<Incoming>) -> Result<Vec<(String, String)>, ApiError> {
    let collected = Limited::new(req.into_body(), PORTAL_FORM_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit_bytes: PORTAL_FORM_BYTES_MAX,
        })?;
    Ok(parse_form(&collected.to_bytes()))
}

/// Serves one `/portal` request; never fails (errors become pages).
#[expect(
    clippy::too_many_lines,
    reason = "a request's steps in order: assets, login, session, form token, page"
)]
pub async fn handle(
    state: &ApiState,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > URI_LEN_MAX {
        return respond(
            state,
            pages::error_page(state, &ApiError::NotFound("")),
            None,
        );
    }
    let method = req.method().clone();
    let rest = path.trim_start_matches("/portal").trim_start_matches('/');
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["assets", "portal.css"]) => return asset(state, &CSS, req.headers()),
        (&Method::GET, ["assets", "portal.js"]) => return asset(state, &JS, req.headers()),
        (&Method::GET, ["assets", "theme.css"]) => {
            return theme(state, req.uri().query().unwrap_or(""), req.headers());
        }
        (&Method::GET, ["login"]) => return respond(state, pages::login(state), None),
        (&Method::POST, ["session"]) => return open_session(state, req).await,
        (&Method::GET, ["operator"]) => {
            return respond(state, pages::operator_login(state, None), None);
        }
        (&Method::POST, ["operator"]) => return operator_login(state, req, peer).await,
        _ => {}
    }
    let now_ms = state.clock.now_ms();
    let session = session_cookie(state, req.headers()).map(str::to_owned);
    let Some((auth, session)) = session.and_then(|token| {
        crate::api::portal_session(state, &token, now_ms).map(|auth| (auth, token))
    }) else {
        return respond(state, pages::expired(state), None);
    };
    // A tenant's session is one application's, with its link's grant. An operator's
    // (org-scoped) acts as the org on every application, and works on the one it chose
    // last (a cookie naming it: a choice, not a credential).
    let (auth, app_id, operator) = match auth.scope {
        TokenScope::App(app_key) => match state
            .log
            .read(|rtxn, dbs| crate::log::tables::app_by_key(rtxn, dbs, app_key))
        {
            Ok(Some(app)) => (auth, app.id, false),
            _ => return respond(state, pages::expired(state), None),
        },
        TokenScope::Org => {
            let chosen = cookie(req.headers(), &app_cookie_name(state))
                .and_then(|id| {
                    state
                        .log
                        .read(|rtxn, dbs| crate::log::tables::app_by_ref(rtxn, dbs, id))
                        .ok()
                        .flatten()
                })
                .map(|app| app.id)
                .unwrap_or_default();
            let org = Auth {
                scope: TokenScope::Org,
                token_hash: auth.token_hash,
                portal: None,
            };
            (org, chosen, true)
        }
        TokenScope::Poller { .. } => return respond(state, pages::expired(state), None),
    };
    let csrf = csrf_of(&session);
    let theme = cookie(req.headers(), &theme_cookie_name(state))
        .map(|c| Theme::from_pairs(&parse_form(c.as_bytes())))
        .unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_owned();
    let form = if method == Method::POST {
        if !same_origin(req.headers()) {
            return respond(state, pages::error_page(state, &ApiError::Forbidden), None);
        }
        match read_form(req).await {
            Ok(form) => form,
            Err(e) => return respond(state, pages::error_page(state, &e), None),
        }
    } else {
        Vec::new()
    };
    let visit = Visit {
        state,
        auth,
        app_id,
        operator,
        csrf,
        query,
        form,
        theme,
    };
    if method == Method::POST {
        let given = visit.field("_csrf").unwrap_or("");
        if !ring_eq(given.as_bytes(), visit.csrf.as_bytes()) {
            return respond(state, pages::error_page(state, &ApiError::Forbidden), None);
        }
    }
    if (&method, segs.as_slice()) == (&Method::POST, ["logout"].as_slice()) {
        crate::api::portal_access::close_session(state, visit.auth.token_hash).await;
        let gone = format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
            cookie_name(state),
            if secure(state) { "; Secure" } else { "" }
        );
        return respond(state, pages::logged_out(state), Some(gone));
    }
    if operator
        && method == Method::GET
        && let ["apps", chosen] = segs.as_slice()
    {
        return choose_app(&visit, chosen).await;
    }
    let answer = match pages::route(&visit, &method, &segs).await {
        Ok(answer) => answer,
        Err(error) => pages::error_page(state, &error),
    };
    let mut response = respond(state, answer, None);
    set_csp(state, &mut response, visit.theme.icon.as_deref());
    response
}

/// Constant-time equality of two byte strings of public length.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where Svix's `?next=` sends a tenant after signing in: a path inside the portal
/// (`/endpoints/<id>` is `/portal/endpoints/<id>`); anything else is the home page, so the
/// link cannot send anyone off the portal.
fn deep_link(next: &str) -> String {
    let safe = next.starts_with('/')
        && next.len() <= 512
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
        && !next.contains("//")
        && !next.split('/').any(|s| s == "..");
    if safe {
        format!("/portal{next}")
    } else {
        "/portal/".to_owned()
    }
}

/// POST /portal/session: the login code (in the link's `key`) for a session cookie.
async fn open_session(state: &ApiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !same_origin(req.headers()) {
        return respond(state, pages::error_page(state, &ApiError::Forbidden), None);
    }
    let form = match read_form(req).await {
        Ok(form) => form,
        Err(e) => return respond(state, pages::error_page(state, &e), None),
    };
    let code = form
        .iter()
        .find(|(k, _)| k == "key")
        .and_then(|(_, key)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim_end_matches('='))
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned));
    let Some(code) = code else {
        return respond(state, pages::expired(state), None);
    };
    let next = form
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| deep_link(v))
        .unwrap_or_else(|| "/portal/".to_owned());
    match crate::api::portal_access::open_session(state, &code).await {
        Ok(session) => {
            let cookie = format!(
                "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                cookie_name(state),
                state.portal.session_lifetime_seconds,
                if secure(state) { "; Secure" } else { "" }
            );
            let theme = form
                .iter()
                .find(|(k, _)| k == "theme")
                .map(|(_, t)| Theme::from_pairs(&parse_form(t.as_bytes())).encode())
                .unwrap_or_default();
            let theme_cookie = format!(
                "{}={theme}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                theme_cookie_name(state),
                state.portal.session_lifetime_seconds,
                if secure(state) { "; Secure" } else { "" }
            );
            respond_with(state, Answer::Redirect(next), vec![cookie, theme_cookie])
        }
        Err(_) => respond(state, pages::expired(state), None),
    }
}

/// GET /portal/apps/{app} for an operator: work on that application (its pages with every
/// capability) from now on.
async fn choose_app(visit: &Visit<'_>, app_ref: &str) -> Response<Full<Bytes>> {
    let state = visit.state;
    let app = match visit
        .api(
            Method::GET,
            &format!("app/{}", pages::seg(app_ref)),
            "",
            None,
        )
        .await
    {
        Ok(app) => app,
        Err(error) => return respond(state, pages::error_page(state, &error), None),
    };
    let id = app["id"].as_str().unwrap_or_default();
    let cookie = portal_cookie(
        state,
        &app_cookie_name(state),
        id,
        state.portal.session_lifetime_seconds,
    );
    respond(state, Answer::Redirect("/portal/".to_owned()), Some(cookie))
}

/// POST /portal/operator: an org-wide API token (typed into the operator form) for an
/// operator's session cookie.
async fn operator_login(
    state: &ApiState,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Response<Full<Bytes>> {
    if !same_origin(req.headers()) {
        return respond(state, pages::error_page(state, &ApiError::Forbidden), None);
    }
    let form = match read_form(req).await {
        Ok(form) => form,
        Err(e) => return respond(state, pages::error_page(state, &e), None),
    };
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map_or("", |(_, v)| v.as_str());
    match crate::api::portal_access::operator_session(state, token, peer).await {
        Ok(session) => {
            let lifetime = state.portal.session_lifetime_seconds;
            let cookies = vec![
                portal_cookie(state, cookie_name(state), &session, lifetime),
                // A new operator starts at the list of applications.
                portal_cookie(state, &app_cookie_name(state), "", 0),
                portal_cookie(state, &theme_cookie_name(state), "", 0),
            ];
            respond_with(state, Answer::Redirect("/portal/".to_owned()), cookies)
        }
        Err(error) => respond(state, pages::operator_login(state, Some(&error)), None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn deep_links_stay_inside_the_portal() {
        assert_eq!(
            super::deep_link("/endpoints/ep_1"),
            "/portal/endpoints/ep_1"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/../api",
            "/a?b",
            "x",
            "/a\\b",
        ] {
            assert_eq!(super::deep_link(bad), "/portal/", "{bad}");
        }
    }
}
