"""Subscribes an operational-webhook endpoint with the official Svix SDK, unchanged.

Environment: SLUICE_URL, SLUICE_TOKEN, OPS_URL (the subscriber), OPS_UID. Prints the
endpoint's id and its signing secret, one per line.
"""

import os

from svix.api import OperationalWebhookEndpointIn, Svix, SvixOptions

svix = Svix(os.environ["SLUICE_TOKEN"], SvixOptions(server_url=os.environ["SLUICE_URL"]))
endpoint = svix.operational_webhook.endpoint.create(
    OperationalWebhookEndpointIn(url=os.environ["OPS_URL"], uid=os.environ["OPS_UID"])
)
print(endpoint.id)
print(svix.operational_webhook.endpoint.get_secret(endpoint.id).key)
