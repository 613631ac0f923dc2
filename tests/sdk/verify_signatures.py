"""Verifies deliveries captured by tests/it/delivery.rs with the `standardwebhooks` library.

Argument: a JSON file of cases {"deliveries": [{body, headers}], "secret", "valid"}; every
delivery of a case must verify with its secret exactly when "valid" is true.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

cases = json.load(open(sys.argv[1]))
for i, case in enumerate(cases):
    hook = Webhook(case["secret"])
    for d in case["deliveries"]:
        try:
            hook.verify(d["body"], d["headers"])
            ok = True
        except WebhookVerificationError:
            ok = False
        if ok != case["valid"]:
            raise SystemExit(f"case {i}: delivery n={d.get('n')} verified={ok}, expected {case['valid']}")
    print(f"case {i}: {len(case['deliveries'])} deliveries verified as expected ({case['valid']})")
print("ALL SIGNATURES AS EXPECTED")
