"""The link the unmodified Python SDK mints opens Sluice's portal, and its token works
with the SDK itself (and logs out).

Run by tests/it/portal.rs with SLUICE_URL, SLUICE_TOKEN and CHROMIUM set, and JS_LINK: the
link the unmodified JavaScript SDK minted (portal_js_link.mjs), opened too. Prints
"SDK LINK CHECKS PASSED" on success; any failed check raises.
"""

import json
import os

from playwright.sync_api import expect, sync_playwright
from svix.api import AppPortalAccessIn, ApplicationIn, Svix, SvixOptions
from svix.exceptions import HttpError

URL = os.environ["SLUICE_URL"]
svix = Svix(os.environ["SLUICE_TOKEN"], SvixOptions(server_url=URL))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


app = svix.application.create(ApplicationIn(name="SDK tenant", uid="sdk-tenant"))
out = svix.authentication.app_portal_access(app.id, AppPortalAccessIn())
check(out.url.startswith(f"{URL}/portal/login#key="), "the SDK's link points at Sluice's portal")

with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=os.environ["CHROMIUM"], args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(out.url)
    expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
    expect(page.get_by_text("SDK tenant")).to_be_visible()
    check(True, "the SDK's link opens the portal on the tenant's application")
    js_link = json.loads(os.environ["JS_LINK"])
    page = browser.new_page()
    page.goto(js_link["url"])
    expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
    expect(page.get_by_text("JS tenant")).to_be_visible()
    check(page.get_by_role("link", name="Add endpoint").count() == 0, "the JS SDK's ViewBase link opens a view-only portal")
    browser.close()

tenant = Svix(out.token, SvixOptions(server_url=URL))
check(tenant.endpoint.list(app.id).data == [], "the link's token lists the app's endpoints with the SDK")
tenant.authentication.logout()
try:
    tenant.endpoint.list(app.id)
    raise AssertionError("a logged-out token still works")
except HttpError as e:
    check(e.status_code == 401, "after logout the token is refused")

print("SDK LINK CHECKS PASSED")
