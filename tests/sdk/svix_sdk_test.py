"""Drives Sluice with the official Python `svix` SDK and checks that data round-trips.

Run by tests/it/sdk.rs with SLUICE_URL and SLUICE_TOKEN set. Prints
"ALL SDK CHECKS PASSED" on success; any failed check raises.
"""

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from svix.api import (
    ApplicationIn,
    EndpointHeadersIn,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointPatch,
    EndpointSecretRotateIn,
    EndpointUpsertIn,
    EventExampleIn,
    EventTypeIn,
    MessageIn,
    MessageStatus,
    OperationalWebhookEndpointIn,
    BulkReplayIn,
    RecoverIn,
    ReplayIn,
    Svix,
    SvixOptions,
)
from svix.api.event_type import EventTypeListOptions
from svix.api.endpoint import EndpointListOptions
from svix.api.message_attempt import MessageAttemptListByEndpointOptions, MessageAttemptListByMsgOptions
from svix.api.message import MessageListOptions, MessageGetOptions, MessageCreateOptions
from svix.exceptions import HTTPValidationError, HttpError
from standardwebhooks.webhooks import Webhook

svix = Svix(os.environ["SLUICE_TOKEN"], SvixOptions(server_url=os.environ["SLUICE_URL"]))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


app = svix.application.get_or_create(ApplicationIn(name="SDK App", uid="sdk-app", metadata={"team": "a"}))
again = svix.application.get_or_create(ApplicationIn(name="ignored", uid="sdk-app"))
check(app.id == again.id and app.id.startswith("app_"), "application.get_or_create returns one app")
check(svix.application.get("sdk-app").metadata == {"team": "a"}, "application metadata round-trips")

for name in ["invoice.paid", "invoice.failed"]:
    svix.event_type.create(EventTypeIn(name=name, description=f"An {name} event"))
types = svix.event_type.list(EventTypeListOptions())
check({t.name for t in types.data} >= {"invoice.paid", "invoice.failed"}, "event_type create and list")
grouped = svix.event_type.create(EventTypeIn(name="invoice.voided", description="voided", group_name="invoices",
                                             schemas={"1": {"examples": [{"invoice": 0}]}}))
check(grouped.group_name == "invoices" and svix.event_type.get("invoice.voided").group_name == "invoices",
      "event_type groupName round-trips")
try:
    svix.event_type.create(EventTypeIn(name="invoice.bad", description="bad", schemas={"1": {"examples": ["text"]}}))
    raise AssertionError("a string schema example was accepted")
except HTTPValidationError as e:
    check(e.detail[0].loc == ["body", "schemas", "1", "examples"], "a schema example that is not an object is 422")

ep = svix.endpoint.create(
    app.id,
    EndpointIn(
        url="https://hooks.example.com/sluice",
        uid="billing",
        description="billing hook",
        event_types=["invoice.paid"],
        channels=["eu", "us"],
        headers={"X-Tenant": "t-1"},
    ),
)
check(ep.id.startswith("ep_") and ep.event_types == ["invoice.paid"] and ep.channels == ["eu", "us"],
      "endpoint create with event types and channels")
check(svix.endpoint.get_headers(app.id, ep.id).headers == {"X-Tenant": "t-1"}, "headers given at create")
svix.endpoint.set_headers(app.id, ep.id, EndpointHeadersIn(headers={"X-Tenant": "t-2", "Authorization": "Bearer x"}))
headers = svix.endpoint.get_headers(app.id, ep.id)
check(headers.headers == {"X-Tenant": "t-2"} and headers.sensitive == ["Authorization"], "sensitive headers hidden")
svix.endpoint.patch_headers(app.id, ep.id, EndpointHeadersPatchIn(headers={"X-Extra": "1"}, delete_headers=["X-Tenant"]))
check(svix.endpoint.get_headers(app.id, ep.id).headers == {"X-Extra": "1"}, "patch_headers with deleteHeaders")

listed = svix.endpoint.list(app.id, EndpointListOptions())
check([e.id for e in listed.data] == [ep.id], "endpoint list")

secret = svix.endpoint.get_secret(app.id, ep.id).key
check(secret.startswith("whsec_"), "endpoint secret get")
svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn())
rotated = svix.endpoint.get_secret(app.id, ep.id).key
check(rotated != secret and rotated.startswith("whsec_"), "endpoint secret rotate")
chosen = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn(key=chosen))
check(svix.endpoint.get_secret(app.id, ep.id).key == chosen, "rotate to a chosen key")

sent = []
for i in range(7):
    msg = svix.message.create(
        app.id,
        MessageIn(event_type="invoice.paid", payload={"invoice": i, "amount": 100 + i}, channels=["eu"],
                  event_id=f"inv-{i}"),
        MessageCreateOptions(with_content=True),
    )
    check(msg.id.startswith("msg_") and msg.payload == {"invoice": i, "amount": 100 + i}, f"message create {i}")
    sent.append(msg.id)
try:
    svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={}, event_id="inv-0"))
    raise AssertionError("duplicate eventId accepted")
except HttpError as e:
    check(e.status_code == 409, "duplicate eventId is 409")

got = svix.message.get(app.id, sent[3], MessageGetOptions(with_content=True))
check(got.payload == {"invoice": 3, "amount": 103} and got.channels == ["eu"] and got.event_id == "inv-3",
      "message get with content")
check(svix.message.get(app.id, "inv-5").id == sent[5], "message get by eventId")

seen = []
iterator = None
pages = 0
while True:
    page = svix.message.list(app.id, MessageListOptions(limit=3, iterator=iterator, with_content=True))
    pages += 1
    seen.extend(m.id for m in page.data)
    if page.done:
        break
    iterator = page.iterator
check(pages == 3 and seen == list(reversed(sent)), "message list across several pages, newest first")
tagged = svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={"t": 1}, tags=["project_1"]))
check(tagged.tags == ["project_1"] and svix.message.get(app.id, tagged.id).tags == ["project_1"], "message tags round-trip")
check([m.id for m in svix.message.list(app.id, MessageListOptions(tag="project_1")).data] == [tagged.id],
      "message list tag filter")
filtered = svix.message.list(app.id, MessageListOptions(event_types=["invoice.failed"]))
check(filtered.data == [], "message list event_types filter")
windowed = svix.message.list(app.id, MessageListOptions(after=got.timestamp))
check(sent[3] not in [m.id for m in windowed.data] and sent[6] in [m.id for m in windowed.data], "message list after")

updated = svix.endpoint.upsert(app.id, ep.id, EndpointUpsertIn(url="https://hooks.example.com/v2", description="v2",
                                                            event_types=["invoice.paid", "invoice.failed"]))
check(updated.url == "https://hooks.example.com/v2" and updated.event_types == ["invoice.paid", "invoice.failed"],
      "endpoint update (PUT)")
put_created = svix.endpoint.upsert(app.id, "created-by-put", EndpointUpsertIn(url="https://hooks.example.com/put"))
check(put_created.id.startswith("ep_") and put_created.uid == "created-by-put",
      "endpoint upsert (PUT) creates an endpoint named by the path")
svix.endpoint.delete(app.id, put_created.id)
patched = svix.endpoint.patch(app.id, ep.id, EndpointPatch(disabled=True))
check(patched.disabled and patched.url == "https://hooks.example.com/v2", "endpoint patch")
svix.endpoint.delete(app.id, ep.id)
try:
    svix.endpoint.get(app.id, ep.id)
    raise AssertionError("deleted endpoint still readable")
except HttpError as e:
    check(e.status_code == 404, "endpoint delete")

# Delivery views, manual delivery and background tasks. The endpoint's destination is
# not reachable from the test, so its deliveries are pending or failing: the shapes are
# what is checked here (delivery itself is tested in tests/it against real receivers).
ep2 = svix.endpoint.create(app.id, EndpointIn(url="https://hooks.example.com/v3"))
m = svix.message.create(app.id, MessageIn(event_type="invoice.paid", payload={"x": 1}))
dests = svix.message_attempt.list_attempted_destinations(app.id, m.id)
check([d.id for d in dests.data] == [ep2.id], "attempted destinations")
msgs = svix.message_attempt.list_attempted_messages(app.id, ep2.id)
check(m.id in [x.id for x in msgs.data], "attempted messages")
stats = svix.endpoint.get_stats(app.id, ep2.id)
check(stats.pending + stats.sending + stats.fail + stats.success == 1, "endpoint stats")
svix.message_attempt.resend(app.id, m.id, ep2.id)
for status in [MessageStatus.PENDING, MessageStatus.SENDING, MessageStatus.CANCELED]:
    by_ep = svix.message_attempt.list_by_endpoint(app.id, ep2.id, MessageAttemptListByEndpointOptions(status=status))
    by_msg = svix.message_attempt.list_by_msg(app.id, m.id, MessageAttemptListByMsgOptions(status=status))
    check(by_ep.data == [] and by_msg.data == [], f"attempt lists with status {status.name} are empty, not 422")
future = datetime.now(timezone.utc) + timedelta(hours=1)
check(svix.message_attempt.list_by_endpoint(app.id, ep2.id, MessageAttemptListByEndpointOptions(
    after=future)).data == [], "attempt list by endpoint: after")
check(svix.message_attempt.list_by_msg(app.id, m.id, MessageAttemptListByMsgOptions(
    event_types=["invoice.failed"])).data == [], "attempt list by message: event_types")
check(svix.message_attempt.list_by_msg(app.id, m.id, MessageAttemptListByMsgOptions(
    channel="nowhere", before=future)).data == [], "attempt list by message: channel and before")
example = svix.endpoint.send_example(app.id, ep2.id, EventExampleIn(event_type="svix.ping"))
check(example.event_type == "svix.ping", "send example")
since = datetime.now(timezone.utc) - timedelta(hours=1)
recovering = svix.endpoint.recover(app.id, ep2.id, RecoverIn(since=since))
check(recovering.id.startswith("qtask_") and recovering.task == "endpoint.recover", "recover")
replaying = svix.endpoint.replay_missing(app.id, ep2.id, ReplayIn(since=since))
task = svix.background_task.get(replaying.id)
check(task.id == replaying.id and task.task == "endpoint.replay" and "messagesSent" in task.data,
      "background task get")
listed = [t.id for t in svix.background_task.list().data]
check(recovering.id in listed and replaying.id in listed, "background task list")

# deliverAt and an inline application, delivered to a receiver on loopback (the daemon
# runs with --allow-http --allow-network 127.0.0.0/8).
arrivals = []


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        arrivals.append((time.time(), self.headers.get("webhook-id")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=receiver.serve_forever, daemon=True).start()

# Operational webhooks, subscribed as the SDK does; each event verified with the
# standardwebhooks library.
operational = []


class OpsHook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        operational.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


ops_receiver = ThreadingHTTPServer(("127.0.0.1", 0), OpsHook)
threading.Thread(target=ops_receiver.serve_forever, daemon=True).start()
ops = svix.operational_webhook.endpoint.create(OperationalWebhookEndpointIn(
    url=f"http://127.0.0.1:{ops_receiver.server_address[1]}/", event_types=["endpoint.created"]))
check([e.id for e in svix.operational_webhook.endpoint.list().data] == [ops.id],
      "operational_webhook.endpoint create and list")
ops_secret = svix.operational_webhook.endpoint.get_secret(ops.id).key
inline = svix.message.create("sdk-inline", MessageIn(
    event_type="invoice.paid", payload={"n": 0}, application=ApplicationIn(name="Inline", uid="sdk-inline")))
check(svix.application.get("sdk-inline").name == "Inline" and inline.id.startswith("msg_"),
      "message create with an inline application creates it")
svix.message.create("sdk-inline", MessageIn(
    event_type="invoice.paid", payload={"n": 1}, application=ApplicationIn(name="Other", uid="sdk-inline")))
check(svix.application.get("sdk-inline").name == "Inline", "an inline application that exists is used")
inline_ep = svix.endpoint.create("sdk-inline", EndpointIn(url=f"http://127.0.0.1:{receiver.server_address[1]}/"))
deadline = time.time() + 30
while not operational and time.time() < deadline:
    time.sleep(0.05)
check(len(operational) == 1, "one operational event arrives")
event = Webhook(ops_secret).verify(operational[0][1], operational[0][0])
check(event["type"] == "endpoint.created" and event["data"]["endpointId"] == inline_ep.id
      and event["data"]["appUid"] == "sdk-inline", "endpoint.created, verified with standardwebhooks")
ops_receiver.shutdown()
deliver_at = datetime.now(timezone.utc) + timedelta(seconds=3)
scheduled = svix.message.create("sdk-inline", MessageIn(event_type="invoice.paid", payload={"n": 2},
                                                       deliver_at=deliver_at))
check(svix.message.get("sdk-inline", scheduled.id).deliver_at is not None, "message deliverAt is shown")
deadline = time.time() + 30
while not any(mid == scheduled.id for _, mid in arrivals) and time.time() < deadline:
    time.sleep(0.05)
arrived = [at for at, mid in arrivals if mid == scheduled.id]
check(arrived and arrived[0] >= deliver_at.timestamp() - 0.01,
      "a message 3 s in the future arrives, and not before its deliverAt")
bulk = svix.endpoint.bulk_replay("sdk-inline", svix.endpoint.list("sdk-inline").data[0].id,
                               BulkReplayIn(since=datetime.now(timezone.utc) - timedelta(hours=1),
                                            event_types=["invoice.paid"], status=MessageStatus.SUCCESS))
check(bulk.id.startswith("qtask_") and bulk.task == "endpoint.bulk-replay", "endpoint bulk_replay")
deadline = time.time() + 30
while svix.background_task.get(bulk.id).status != "finished" and time.time() < deadline:
    time.sleep(0.05)
check(svix.background_task.get(bulk.id).data["messagesSent"] == 1, "bulk_replay re-sends the delivered message")
receiver.shutdown()

print("ALL SDK CHECKS PASSED")
