"""The tenant portal end to end: Debian's Chromium, driven by Playwright, against a real
Sluice and real receivers on loopback.

Run by tests/it/portal.rs with SLUICE_URL, SLUICE_TOKEN, HOST_URL (a page that frames the
portal, on an allowed origin), OTHER_HOST_URL (the same page on an origin that is not
allowed), CHROMIUM (the browser's path) and SCREENSHOTS (where the PNGs go). Prints
"ALL PORTAL CHECKS PASSED" on success; any failed check raises.

Every control is found by its role and accessible name. Nothing sleeps: waits are on
conditions, each with a deadline.
"""

import gzip
import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect, sync_playwright
from standardwebhooks.webhooks import Webhook
from svix.api import (
    AppPortalAccessIn,
    ApplicationIn,
    ApplicationTokenExpireIn,
    EndpointIn,
    EventTypeIn,
    Svix,
    SvixOptions,
)
from svix.models import AppPortalCapability as Cap

URL = os.environ["SLUICE_URL"]
TOKEN = os.environ["SLUICE_TOKEN"]
HOST_URL = os.environ["HOST_URL"]
OTHER_HOST_URL = os.environ["OTHER_HOST_URL"]
SHOTS = os.environ["SCREENSHOTS"]
DEADLINE_S = 20

svix = Svix(TOKEN, SvixOptions(server_url=URL))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def until(what, probe, deadline_s=DEADLINE_S):
    """Calls probe until it returns something true, within the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """A webhook receiver on loopback; answers as `status`/`body`/`content_type` say."""

    def __init__(self):
        self.status, self.body, self.content_type = 200, b'{"ok":true}', "application/json"
        self.seen = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.seen.append((dict(self.headers), body))
                    status, answer, ctype = receiver.status, receiver.body, receiver.content_type
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def answer(self, status, body, content_type="application/json"):
        with self.lock:
            self.status, self.body, self.content_type = status, body, content_type

    def count(self):
        with self.lock:
            return len(self.seen)

    def last(self):
        with self.lock:
            return self.seen[-1]


def rest(method, path, token, body=None):
    """An /api/v1 call with `token`; returns (status, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{URL}/api/v1/{path}", data=data, method=method)
    req.add_header("authorization", f"Bearer {token}")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, None


def link(**fields):
    return svix.authentication.app_portal_access("acme", AppPortalAccessIn(**fields))


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def reload_until(page, what, locator):
    """Reloads the page until `locator` is visible (deliveries finish in the background)."""

    def probe():
        if locator.count() > 0 and locator.first.is_visible():
            return True
        page.reload()
        return False

    until(what, probe)


# --- Setup: an application, event types (one with an example, one behind a flag).
svix.application.create(ApplicationIn(name="Acme Corp", uid="acme"))
example = {"1": {"examples": [{"invoice": "in_123", "amount": 4200}]}}
svix.event_type.create(EventTypeIn(name="invoice.paid", description="An invoice was paid", schemas=example))
svix.event_type.create(EventTypeIn(name="invoice.voided", description="An invoice was voided", schemas=example))
svix.event_type.create(EventTypeIn(name="user.created", description="A user signed up"))
svix.event_type.create(
    EventTypeIn(name="beta.preview", description="Preview feature", feature_flags=["beta-preview"], schemas=example)
)
receiver = Receiver()

full = [Cap.VIEW_BASE, Cap.MANAGE_ENDPOINT, Cap.CREATE_ATTEMPTS, Cap.MANAGE_ENDPOINT_SECRET]
access = link(capabilities=full)

with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=os.environ["CHROMIUM"], args=["--no-sandbox"])
    viewport = {"width": 1100, "height": 760}
    ctx = browser.new_context(viewport=viewport)
    requests = []
    ctx.on("request", lambda r: requests.append(r.url))
    page = ctx.new_page()
    page.on("dialog", lambda d: d.accept())

    # --- §5.7 step 2: the magic link, fragment removal, HttpOnly cookie, single use.
    page.goto(access.url)
    expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
    check("#" not in page.url and "key=" not in page.url, "the login key left the address bar")
    cookies = [c for c in ctx.cookies() if c["name"].endswith("sluice_portal")]
    check(len(cookies) == 1 and cookies[0]["httpOnly"], "the session cookie is HttpOnly")
    check(cookies[0]["sameSite"] == "Strict", "the session cookie is SameSite=Strict")
    again = browser.new_context(viewport=viewport)
    reuse = again.new_page()
    reuse.goto(access.url)
    expect(reuse.get_by_role("heading", name="This link has expired")).to_be_visible()
    check(True, "a used link shows the expired page")
    again.close()

    # --- step 3: add an endpoint with the keyboard alone; no event types = all.
    page.get_by_role("link", name="Add endpoint").click()
    expect(page.get_by_role("heading", name="Add endpoint")).to_be_visible()
    shot(page, "add-endpoint")
    until("focus on the URL field", lambda: page.keyboard.press("Tab") or page.evaluate("document.activeElement.id") == "url")
    page.keyboard.type(receiver.url)
    page.keyboard.press("Tab")
    page.keyboard.type("Billing service")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Endpoint", exact=True)).to_be_visible()
    expect(page.get_by_text("All events")).to_be_visible()
    check(True, "an endpoint added with the keyboard receives all events")
    endpoint_path = urllib.parse.urlparse(page.url).path
    endpoint_id = endpoint_path.rsplit("/", 1)[1]

    # --- step 4: send an example and see the 200 and the receiver's body as text.
    page.get_by_role("link", name="Testing").click()
    page.get_by_label("Event type").select_option("invoice.paid")
    shot(page, "testing")
    page.get_by_role("button", name="Send example").click()
    expect(page.get_by_role("heading", name="Message")).to_be_visible()
    reload_until(page, "the example's delivery", page.get_by_role("cell", name="Succeeded"))
    check(receiver.count() == 1, "the receiver got the example")
    page.get_by_role("link", name=re.compile(r"^atmpt_")).first.click()
    expect(page.get_by_role("heading", name="Attempt")).to_be_visible()
    expect(page.get_by_text("200", exact=True)).to_be_visible()
    check(True, "the attempt shows status 200")

    hostile = b'<script>window.__pwned=1;document.title="pwned"</script><img src=x onerror="window.__pwned=2"><b>bold</b>'
    receiver.answer(200, hostile, "text/html")
    page.goto(f"{URL}{endpoint_path}/test")
    page.get_by_role("button", name="Send example").click()
    reload_until(page, "the hostile receiver's delivery", page.get_by_role("cell", name="Succeeded"))
    page.get_by_role("link", name=re.compile(r"^atmpt_")).first.click()
    body = page.get_by_label("Response body")
    expect(body).to_contain_text("<script>window.__pwned=1")
    check(page.evaluate("window.__pwned") is None and page.title() != "pwned", "a receiver's HTML/JS shows as text and runs no script")
    check(page.locator("main b").count() == 0, "the receiver's markup made no element")
    shot(page, "attempt")

    # --- step 5: a failing receiver, then recover: a new attempt succeeds.
    receiver.answer(500, b"down for maintenance", "text/plain")
    page.goto(f"{URL}{endpoint_path}/test")
    page.get_by_role("button", name="Send example").click()
    reload_until(page, "the failed delivery", page.get_by_role("cell", name="Failed"))
    failed_message = page.url
    receiver.answer(200, b'{"ok":true}')
    before = receiver.count()
    page.goto(f"{URL}{endpoint_path}")
    page.get_by_role("button", name="Recover failed messages").click()
    expect(page.get_by_role("status")).to_contain_text("Recovery")
    until("the recovered delivery", lambda: receiver.count() > before)
    reload_until(page, "the recovery task to finish", page.get_by_role("status").filter(has_text="finished"))
    expect(page.get_by_role("status")).to_contain_text("Messages sent: 1.")
    page.goto(failed_message)
    reload_until(page, "the recovered message to succeed", page.get_by_role("cell", name="Succeeded"))
    check(True, "recover sent the failed message again and it succeeded")
    page.goto(f"{URL}{endpoint_path}")
    expect(page.locator("svg.chart")).to_be_visible()
    shot(page, "endpoint")

    # --- step 6: rotate the secret; during the grace both keys verify.
    page.get_by_role("link", name="Signing secret").click()
    expect(page.get_by_label("Signing secret")).to_contain_text("••••")
    shot(page, "secret")
    page.get_by_role("link", name="Reveal secret").click()
    old_key = page.get_by_label("Signing secret").inner_text().strip()
    check(old_key.startswith("whsec_"), "the secret is revealed")
    page.get_by_label("Keep the old secret signing for").select_option("86400")
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_role("status")).to_contain_text("rotated")
    page.get_by_role("link", name="Reveal secret").click()
    new_key = page.get_by_label("Signing secret").inner_text().strip()
    check(new_key.startswith("whsec_") and new_key != old_key, "the secret changed")
    before = receiver.count()
    page.goto(f"{URL}{endpoint_path}/test")
    page.get_by_label("Event type").select_option("invoice.paid")
    page.get_by_role("button", name="Send example").click()
    until("the signed delivery", lambda: receiver.count() > before)
    headers, payload = receiver.last()
    lower = {k.lower(): v for k, v in headers.items()}
    for key in (old_key, new_key):
        Webhook(key).verify(payload, lower)
    check(True, "the receiver verifies with the old and the new key during the grace")

    # --- the remaining pages, for the record.
    page.get_by_role("link", name="Messages").click()
    expect(page.get_by_role("heading", name="Messages")).to_be_visible()
    page.get_by_label("Event type").fill("user.created")
    page.get_by_label("Since").select_option("5")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No messages.")).to_be_visible()
    page.get_by_label("Event type").fill("invoice.paid")
    page.get_by_role("button", name="Filter").click()
    check(page.get_by_role("link", name=re.compile(r"^msg_")).count() >= 1, "the message log filters by event type and time")
    shot(page, "messages")
    page.get_by_role("link", name=re.compile(r"^msg_")).first.click()
    expect(page.get_by_label("Payload")).to_contain_text("in_123")
    shot(page, "message")
    page.get_by_role("link", name="Endpoints").click()
    expect(page.get_by_role("link", name=receiver.url)).to_be_visible()
    shot(page, "endpoints")
    page.get_by_role("link", name="Event catalogue").click()
    expect(page.get_by_role("heading", name="invoice.paid")).to_be_visible()
    check(page.get_by_role("heading", name="beta.preview").count() == 0, "a flagged event type is hidden without its flag")
    shot(page, "event-catalogue")

    # --- disable, enable, delete.
    page.goto(f"{URL}{endpoint_path}")
    page.get_by_role("button", name="Disable endpoint").click()
    expect(page.get_by_role("alert")).to_contain_text("This endpoint is disabled")
    page.get_by_role("button", name="Enable endpoint").click()
    expect(page.get_by_role("button", name="Disable endpoint")).to_be_visible()
    check(page.get_by_role("alert").count() == 0, "an endpoint is disabled (with a banner) and enabled again")
    spare = svix.endpoint.create("acme", EndpointIn(url=receiver.url + "/spare"))
    page.goto(f"{URL}/portal/endpoints/{spare.id}")
    page.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
    check(page.get_by_role("link", name=receiver.url + "/spare").count() == 0, "an endpoint is deleted (after a confirm)")

    # --- settings: change the description and the event types; set a custom header.
    page.goto(f"{URL}{endpoint_path}")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    page.get_by_label("Description").fill("Billing service v2")
    page.get_by_label("invoice.paid").check()
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("heading", name="Endpoint", exact=True)).to_be_visible()
    expect(page.get_by_text("Billing service v2")).to_be_visible()
    expect(page.get_by_role("definition").filter(has_text="invoice.paid")).to_be_visible()
    check(True, "settings change the description and the event types")
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Header name").fill("X-Tenant-Key")
    page.get_by_label("Header value (empty removes it)").fill("secret-value-123")
    page.get_by_role("button", name="Set header").click()
    expect(page.get_by_role("cell", name="X-Tenant-Key")).to_be_visible()
    check("secret-value-123" not in page.content(), "a custom header's value is never shown")
    shot(page, "settings")

    # --- step 11: same-origin requests only; assets within budget.
    origin = urllib.parse.urlparse(URL)
    foreign = [u for u in requests if urllib.parse.urlparse(u).netloc != origin.netloc and not u.startswith("data:")]
    check(not foreign, f"no third-party request ({foreign[:3]})")
    total = 0
    for asset in ("portal.css", "theme.css", "portal.js"):
        with urllib.request.urlopen(f"{URL}/portal/assets/{asset}") as resp:
            check(resp.headers.get("etag"), f"{asset} has an ETag")
            total += len(gzip.compress(resp.read()))
    check(total <= 25 * 1024, f"assets are {total} bytes gzipped, within 25 kB")
    csp = urllib.request.urlopen(f"{URL}/portal/login").headers.get("content-security-policy")
    check("unsafe-inline" not in csp and "script-src 'self'" in csp, "the CSP allows no inline script")
    ctx.close()

    # --- Svix's deep link: ?next=/endpoints/<id> opens that endpoint after signing in.
    deep = link(capabilities=full)
    base, fragment = deep.url.split("#", 1)
    dctx = browser.new_context(viewport=viewport)
    dpage = dctx.new_page()
    dpage.goto(f"{base}?next={urllib.parse.quote(endpoint_path.removeprefix('/portal'))}#{fragment}")
    expect(dpage.get_by_role("heading", name="Endpoint", exact=True)).to_be_visible()
    check(dpage.url.endswith(endpoint_path), "?next= opens the endpoint's page after signing in")
    dctx.close()

    # --- step 7: a read-only link: no write controls; forged POSTs and REST writes refused.
    ro = link(read_only=True, capabilities=full)
    rctx = browser.new_context(viewport=viewport)
    rpage = rctx.new_page()
    rpage.goto(ro.url)
    expect(rpage.get_by_role("heading", name="Endpoints")).to_be_visible()
    check(rpage.get_by_role("link", name="Add endpoint").count() == 0, "read-only: no Add endpoint")
    rpage.get_by_role("link", name=receiver.url).click()
    expect(rpage.get_by_role("heading", name="Endpoint", exact=True)).to_be_visible()
    for name in ("Delete endpoint", "Disable endpoint", "Recover failed messages"):
        check(rpage.get_by_role("button", name=name).count() == 0, f"read-only: no {name} button")
    shot(rpage, "read-only")
    csrf = rpage.locator("input[name=_csrf]").first.get_attribute("value")
    forged = {
        "/portal/endpoints/new": {"url": receiver.url},
        f"{endpoint_path}/delete": {},
        f"{endpoint_path}/disable": {},
        f"{endpoint_path}/recover": {"since": "24"},
        f"{endpoint_path}/test": {"eventType": "svix.ping"},
        f"{endpoint_path}/secret/rotate": {"grace": "0"},
    }
    for path, form in forged.items():
        resp = rctx.request.post(f"{URL}{path}", form={"_csrf": csrf, **form}, max_redirects=0)
        check(resp.status == 403, f"read-only: a forged POST {path} is refused ({resp.status})")
    resp = rctx.request.post(f"{URL}{endpoint_path}/delete", form={"_csrf": "forged"}, max_redirects=0)
    check(resp.status == 403, "a POST without the session's form token is refused")
    app_id = svix.application.get("acme").id
    check(rest("GET", f"app/{app_id}/endpoint", ro.token)[0] == 200, "read-only token: REST reads work")
    for method, path, body in [
        ("POST", f"app/{app_id}/endpoint", {"url": receiver.url}),
        ("DELETE", f"app/{app_id}/endpoint/{endpoint_id}", None),
        ("PATCH", f"app/{app_id}/endpoint/{endpoint_id}", {"disabled": True}),
        ("POST", f"app/{app_id}/endpoint/{endpoint_id}/send-example", {"eventType": "svix.ping"}),
        ("POST", f"app/{app_id}/endpoint/{endpoint_id}/secret/rotate", {}),
        ("GET", f"app/{app_id}/endpoint/{endpoint_id}/secret", None),
    ]:
        status = rest(method, path, ro.token, body)[0]
        check(status == 403, f"read-only token: {method} {path} is 403 ({status})")
    check(rest("GET", "app/other", access.token)[0] in (403, 404), "a portal token sees no other application")
    rctx.close()

    # --- step 8: a flagged event type appears with its flag (portal and REST).
    check(rest("GET", "event-type/beta.preview", access.token)[0] == 404, "REST: the flagged type is 404 without the flag")
    status = rest("POST", f"app/{app_id}/endpoint/{endpoint_id}/send-example", access.token, {"eventType": "beta.preview"})[0]
    check(status == 404, f"REST: no example of the flagged type without the flag ({status})")
    flagged = link(feature_flags=["beta-preview"])
    fctx = browser.new_context(viewport=viewport)
    fpage = fctx.new_page()
    fpage.goto(flagged.url)
    expect(fpage.get_by_role("heading", name="Endpoints")).to_be_visible()
    fpage.get_by_role("link", name="Event catalogue").click()
    expect(fpage.get_by_role("heading", name="beta.preview")).to_be_visible()
    check(rest("GET", "event-type/beta.preview", flagged.token)[0] == 200, "REST: the flagged type is visible with the flag")
    fctx.close()

    # --- step 9: expiry: the link's session ends; the expired page offers a new link.
    short = link(expiry=3600, session_id="short-lived")
    ectx = browser.new_context(viewport=viewport)
    epage = ectx.new_page()
    epage.goto(short.url)
    expect(epage.get_by_role("heading", name="Endpoints")).to_be_visible()
    check(rest("GET", f"app/{app_id}", short.token)[0] == 200, "the link's token works before expiry")
    svix.authentication.expire_all("acme", ApplicationTokenExpireIn(expiry=1, session_ids=["short-lived"]))

    def expired():
        epage.reload()
        return epage.get_by_role("heading", name="This link has expired").count() > 0

    until("the session to expire", expired)
    expect(epage.get_by_role("link", name="Get a new link")).to_be_visible()
    check(rest("GET", f"app/{app_id}", short.token)[0] == 401, "the link's token is refused after expiry")
    check(rest("GET", f"app/{app_id}", flagged.token)[0] == 200, "links of other sessions still work")
    shot(epage, "expired")
    ectx.close()

    # --- step 10: embedding: allowed origin frames it and gets the height; another is refused.
    hctx = browser.new_context(viewport=viewport)
    hpage = hctx.new_page()
    embedded = link(capabilities=full)
    # As svix-react's AppPortal does: Svix's look parameters on the link.
    base, fragment = embedded.url.split("#", 1)
    themed = f"{base}?darkMode=true&primaryColor=%23c2410c&hideNavigation=true#{fragment}"
    hpage.goto(f"{HOST_URL}/?src={urllib.parse.quote(themed, safe='')}")
    frame = hpage.frame_locator("iframe")
    expect(frame.get_by_role("heading", name="Endpoints")).to_be_visible()
    expect(frame.locator("html.dark")).to_have_count(1)
    check(frame.get_by_role("navigation", name="Main").count() == 0, "darkMode and hideNavigation from the link apply")
    primary = frame.locator("body").evaluate("() => getComputedStyle(document.documentElement).getPropertyValue('--primary').trim()")
    check(primary == "#c2410c", f"primaryColor from the link applies ({primary})")
    height = until("the height message", lambda: hpage.evaluate("window.portalHeight || 0"))
    check(height > 100, f"the framing page got the height message ({height} px)")
    until(
        "the iframe to grow",
        lambda: hpage.evaluate("document.querySelector('iframe').offsetHeight === window.portalHeight"),
    )
    check(True, "the iframe grew to the portal's height")
    shot(hpage, "embedded")
    refusals = []
    hpage.on("console", lambda m: refusals.append(m.text) if "frame-ancestors" in m.text else None)
    other = link(capabilities=full)
    hpage.goto(f"{OTHER_HOST_URL}/?src={urllib.parse.quote(other.url, safe='')}")
    until("the frame-ancestors refusal", lambda: refusals)
    check(hpage.evaluate("window.portalHeight || 0") == 0, "a page on another origin cannot frame the portal")
    hctx.close()

    # --- the operator's view: an org-wide token signs in, sees every application with its
    # endpoints' health, opens one with every capability, and logs out.
    svix.application.create(ApplicationIn(name="Globex", uid="globex"))
    octx = browser.new_context(viewport=viewport)
    opage = octx.new_page()
    opage.goto(f"{URL}/portal/operator")
    opage.get_by_label("Org-wide API token").fill(TOKEN)
    opage.get_by_role("button", name="Sign in").click()
    expect(opage.get_by_role("heading", name="Applications")).to_be_visible()
    apps = opage.get_by_role("table", name="Applications and their endpoints")
    expect(apps.get_by_role("link", name="Globex")).to_be_visible()
    acme_row = apps.get_by_role("row").filter(has=opage.get_by_role("link", name="Acme Corp"))
    expect(acme_row.get_by_role("cell", name=re.compile(r"succeeded · \d+ failed"))).to_be_visible()
    check(True, "the operator's list shows each application with its endpoints' health")
    shot(opage, "operator")
    acme_row.get_by_role("link", name="Acme Corp").click()
    expect(opage.get_by_role("heading", name="Endpoints")).to_be_visible()
    expect(opage.get_by_role("link", name=receiver.url)).to_be_visible()
    expect(opage.get_by_role("link", name="Add endpoint")).to_be_visible()
    check(True, "the operator opens an application's portal with every capability")
    opage.get_by_role("navigation", name="Operator").get_by_role("link", name="All applications").click()
    expect(opage.get_by_role("heading", name="Applications")).to_be_visible()
    opage.get_by_role("button", name="Log out").click()
    expect(opage.get_by_role("heading", name="You are logged out")).to_be_visible()
    opage.goto(f"{URL}/portal/apps")
    expect(opage.get_by_role("heading", name="This link has expired")).to_be_visible()
    check(True, "the operator's logout ends the session")
    octx.close()
    browser.close()

# --- logout of a bearer token ends that link.
check(rest("POST", "auth/logout", embedded.token)[0] == 204, "logout with the link's token")
check(rest("GET", f"app/{app_id}", embedded.token)[0] == 401, "the logged-out token is refused")

print("ALL PORTAL CHECKS PASSED")
