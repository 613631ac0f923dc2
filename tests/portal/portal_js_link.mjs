// The unmodified JavaScript SDK (npm `svix`) asks Sluice for a portal link; prints it as
// JSON for tests/it/portal.rs, which opens it in Chromium (portal_sdk_link.py).
// Run with SLUICE_URL, SLUICE_TOKEN and SVIX_JS (the node_modules holding `svix`).
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const { Svix } = await import(pathToFileURL(join(process.env.SVIX_JS, "svix/dist/index.mjs")).href);
const svix = new Svix(process.env.SLUICE_TOKEN, { serverUrl: process.env.SLUICE_URL });
const app = await svix.application.create({ name: "JS tenant", uid: "js-tenant" });
const out = await svix.authentication.appPortalAccess(app.id, { capabilities: ["ViewBase"] });
const tenant = new Svix(out.token, { serverUrl: process.env.SLUICE_URL });
const endpoints = await tenant.endpoint.list(app.id);
if (!Array.isArray(endpoints.data)) throw new Error("the link's token did not list endpoints");
console.log(JSON.stringify({ url: out.url, token: out.token }));
