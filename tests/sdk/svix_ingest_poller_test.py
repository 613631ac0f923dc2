"""Drives Sluice's ingest sources and polling endpoints with the official Python `svix`
SDK, unchanged: `svix.ingest.source.*`, `svix.ingest.endpoint.*`, `svix.message.poller.*`.

Run by tests/it/sdk.rs with SLUICE_URL and SLUICE_TOKEN set. Prints
"ALL INGEST AND POLLER CHECKS PASSED" on success; any failed check raises.
"""

import os
import urllib.request
from datetime import datetime, timedelta, timezone

from svix.api import (
    ApplicationIn,
    EndpointIn,
    EventTypeIn,
    IngestEndpointHeadersIn,
    IngestEndpointIn,
    IngestEndpointSecretIn,
    IngestEndpointUpsertIn,
    IngestSourceIn,
    MessageIn,
    PollingEndpointConsumerSeekIn,
    Svix,
    SvixOptions,
)
from svix.api.ingest_source import IngestSourceListOptions
from svix.api.ingest_endpoint import IngestEndpointListOptions
from svix.api.message_poller import (
    MessagePollerConsumerPollOptions,
    MessagePollerPollOptions,
)
from svix.exceptions import HttpError
from svix.api.errors.http_validation_error import HTTPValidationError

svix = Svix(os.environ["SLUICE_TOKEN"], SvixOptions(server_url=os.environ["SLUICE_URL"]))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


# === ingest sources ===
src = svix.ingest.source.create(
    IngestSourceIn(name="GitHub", uid="gh", type="github", config={"secret": "s3cret"})
)
check(src.id.startswith("src_") and src.ingest_url and "/ingest/in/" in src.ingest_url, "ingest.source.create")
check(svix.ingest.source.get("gh").id == src.id, "ingest.source.get by uid")
sources = svix.ingest.source.list(IngestSourceListOptions())
check([s.id for s in sources.data] == [src.id], "ingest.source.list")
up = svix.ingest.source.upsert("gh", IngestSourceIn(name="GitHub 2", uid="gh", type="github", config={"secret": "s3cret"}))
check(up.id == src.id and up.name == "GitHub 2" and up.ingest_url == src.ingest_url, "ingest.source.upsert keeps the URL")
made = svix.ingest.source.upsert("stripe-in", IngestSourceIn(name="Stripe", type="stripe", config={"secret": "whsec_x"}))
check(made.uid == "stripe-in", "ingest.source.upsert creates")
rotated = svix.ingest.source.rotate_token(src.id)
check(rotated.ingest_url != src.ingest_url, "ingest.source.rotate_token")
try:
    svix.ingest.source.create(IngestSourceIn(name="x", type="cron", config={"schedule": "* * * * *", "payload": "{}"}))
    raise AssertionError("cron is refused")
except HTTPValidationError as e:
    check("not supported" in str(e), "an unsupported source type is a 422")

# === ingest destinations ===
dest = svix.ingest.endpoint.create(src.id, IngestEndpointIn(url="https://example.com/in", uid="d1", metadata={"k": "v"}))
check(dest.id.startswith("ep_") and dest.metadata == {"k": "v"}, "ingest.endpoint.create")
check([e.id for e in svix.ingest.endpoint.list(src.id, IngestEndpointListOptions()).data] == [dest.id], "ingest.endpoint.list")
check(svix.ingest.endpoint.get(src.id, "d1").url == "https://example.com/in", "ingest.endpoint.get")
upd = svix.ingest.endpoint.upsert(src.id, dest.id, IngestEndpointUpsertIn(url="https://example.com/in2"))
check(upd.url == "https://example.com/in2", "ingest.endpoint.upsert")
secret = svix.ingest.endpoint.get_secret(src.id, dest.id)
check(secret.key.startswith("whsec_"), "ingest.endpoint.get_secret")
svix.ingest.endpoint.rotate_secret(src.id, dest.id, IngestEndpointSecretIn())
check(svix.ingest.endpoint.get_secret(src.id, dest.id).key != secret.key, "ingest.endpoint.rotate_secret")
svix.ingest.endpoint.set_headers(src.id, dest.id, IngestEndpointHeadersIn(headers={"X-Team": "a"}))
check(svix.ingest.endpoint.get_headers(src.id, dest.id).headers == {"X-Team": "a"}, "ingest.endpoint headers")
svix.ingest.endpoint.delete(src.id, dest.id)
check(svix.ingest.endpoint.list(src.id, IngestEndpointListOptions()).data == [], "ingest.endpoint.delete")
svix.ingest.source.delete(made.id)
check(len(svix.ingest.source.list(IngestSourceListOptions()).data) == 1, "ingest.source.delete")

# A generic source receives without a signature.
gen = svix.ingest.source.create(IngestSourceIn(name="Generic", type="generic-webhook", config={}))
req = urllib.request.Request(gen.ingest_url, data=b'{"hello": "world"}', method="POST", headers={"content-type": "application/json"})
with urllib.request.urlopen(req) as resp:
    check(resp.status == 200, "the generic source's ingestUrl accepts a post")

# === polling ===
app = svix.application.create(ApplicationIn(name="Poll App", uid="poll-app"))
svix.event_type.create(EventTypeIn(name="poll.a", description="a"))
svix.event_type.create(EventTypeIn(name="poll.b", description="b"))
ep = svix.endpoint.create(app.id, EndpointIn(url="https://example.com/poll", uid="poller", event_types=["poll.a"]))
first = svix.message.poller.poll(app.id, ep.id)
check(first.data == [] and first.iterator, "message.poller.poll first call: no data, an iterator")
sent = []
for n in range(5):
    m = svix.message.create(app.id, MessageIn(event_type="poll.a" if n != 2 else "poll.b", payload={"n": n}))
    if n != 2:
        sent.append(m.id)
page = svix.message.poller.poll(app.id, ep.id, MessagePollerPollOptions(iterator=first.iterator, limit=10))
check([m.id for m in page.data] == sent and page.done, "message.poller.poll pages in log order, filtered")
check(page.data[0].payload == {"n": 0} and page.data[0].event_type == "poll.a", "polled message fields")
one = svix.message.poller.poll(app.id, ep.id, MessagePollerPollOptions(iterator=first.iterator, limit=1, event_type="poll.a"))
check(len(one.data) == 1 and not one.done, "message.poller.poll limit and event_type")
c1 = svix.message.poller.consumer_poll(app.id, ep.id, "worker", MessagePollerConsumerPollOptions(limit=2))
check([m.id for m in c1.data] == sent[:2], "message.poller.consumer_poll from the start")
c2 = svix.message.poller.consumer_poll(app.id, ep.id, "worker", MessagePollerConsumerPollOptions(iterator=c1.iterator, limit=10))
check([m.id for m in c2.data] == sent[2:], "message.poller.consumer_poll with the iterator")
resumed = svix.message.poller.consumer_poll(app.id, ep.id, "worker", MessagePollerConsumerPollOptions(limit=10))
check([m.id for m in resumed.data] == sent[2:], "consumer_poll without iterator resumes at the last one used")
seek = svix.message.poller.consumer_seek(app.id, ep.id, "worker", PollingEndpointConsumerSeekIn(after=datetime.now(timezone.utc) - timedelta(days=1)))
check(seek.iterator, "message.poller.consumer_seek")
again = svix.message.poller.consumer_poll(app.id, ep.id, "worker", MessagePollerConsumerPollOptions(limit=10))
check([m.id for m in again.data] == sent, "after seek the consumer reads from that time")
try:
    svix.message.poller.poll(app.id, ep.id, MessagePollerPollOptions(iterator="bogus"))
    raise AssertionError("a bogus iterator is refused")
except HttpError as e:
    check(e.status_code == 400 and e.code == "invalid_iterator", "400 invalid_iterator")

print("ALL INGEST AND POLLER CHECKS PASSED")
