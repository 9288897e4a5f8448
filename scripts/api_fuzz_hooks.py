"""schemathesis hooks for scripts/api-fuzz.sh: the rules of the presence API that a JSON Schema cannot state.

The OpenAPI documents declare everything a schema can (GUIDs, the $filter grammar, the allowed value pairs,
case-insensitive vocabularies) and describe the rest. For the rest, a positive (valid) case is made valid
here before it is sent, so that the checks judge the server and not the generator:
- sessionId is the calling application's id (FUZZ_APP_ID);
- expirationDuration is in the action's range;
- expiryDateTime names an existing time zone and a real date;
- a subscription's URLs answer the validation handshake (the local receiver, FUZZ_RECEIVER), its expiry is
  at most 60 minutes away, its resource names users of the tenant, and a rich one carries a usable
  certificate (FUZZ_CERTIFICATE);
- a batch's ids are unique, its dependsOn names earlier requests, and a request with a body names its
  Content-Type.
Negative (invalid) cases are sent as generated: the server must refuse them.
"""

import datetime
import os

import schemathesis

APP = os.environ["FUZZ_APP_ID"]
RECEIVER = os.environ["FUZZ_RECEIVER"]
CERTIFICATE = os.environ["FUZZ_CERTIFICATE"]
ADELE = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11"


def positive(case):
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def in_minutes(minutes):
    instant = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def fix_presence_action(path, body):
    if isinstance(body.get("sessionId"), str):
        body["sessionId"] = APP
    if isinstance(body.get("expirationDuration"), str):
        body["expirationDuration"] = "PT1H" if path.endswith("/setPresence") else "PT8H"
    status = body.get("statusMessage")
    if isinstance(status, dict) and isinstance(status.get("expiryDateTime"), dict):
        expiry = status["expiryDateTime"]
        if isinstance(expiry.get("dateTime"), str):
            expiry["dateTime"] = "2030-01-01T09:00:00"
        if isinstance(expiry.get("timeZone"), str):
            expiry["timeZone"] = "UTC"


def fix_subscription(body, creating):
    for url in ("notificationUrl", "lifecycleNotificationUrl"):
        if isinstance(body.get(url), str):
            body[url] = f"{RECEIVER}/{url}"
    if isinstance(body.get("expirationDateTime"), str):
        body["expirationDateTime"] = in_minutes(45 if creating else 50)
    if creating:
        if isinstance(body.get("resource"), str):
            body["resource"] = f"communications/presences/{ADELE}"
        if body.get("includeResourceData") is True:
            body["encryptionCertificate"] = CERTIFICATE
            body["encryptionCertificateId"] = "fuzz"


def fix_batch(body):
    requests = body.get("requests")
    if not isinstance(requests, list):
        return
    seen = []
    for index, request in enumerate(requests):
        if not isinstance(request, dict):
            continue
        if isinstance(request.get("id"), str):
            request["id"] = str(index + 1)
        if isinstance(request.get("dependsOn"), list):
            request["dependsOn"] = [identifier for identifier in seen[-1:]]
        if "body" in request and request["body"] is not None:
            headers = request.get("headers")
            if headers is None:
                request["headers"] = {"Content-Type": "application/json"}
            elif isinstance(headers, dict) and not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        seen.append(str(index + 1))


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not positive(case) or not isinstance(case.body, dict):
        return
    path = case.operation.path
    method = case.operation.method.upper()
    if "/presence/" in path or path.startswith("/communications/presences/"):
        fix_presence_action(path, case.body)
    elif path == "/subscriptions" and method == "POST":
        fix_subscription(case.body, creating=True)
    elif path == "/subscriptions/{subscription-id}" and method == "PATCH":
        fix_subscription(case.body, creating=False)
    elif path == "/$batch":
        fix_batch(case.body)
