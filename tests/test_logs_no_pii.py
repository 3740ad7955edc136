"""No personal data and no secrets in any log line, HTTP answer or dead letter, whatever happens.

A realistic set of deliveries runs through the event app under uvicorn with LOG_LEVEL=DEBUG: customers with
addresses and phone numbers, an order with a billing address, a refund, a product and its stock; then the failures
that tend to echo data: Klaviyo and commercetools error bodies quoting the values they refused, malformed
deliveries carrying an email where ids and types belong, throttling, a timeout, a reset connection, a duplicate
profile. Every line the process logs is captured twice: as printed on stdout (our JSON lines) and as the records
reaching the root logger, formatted with their tracebacks (third-party loggers included: httpx, httpcore, uvicorn;
werkzeug is the stand-ins' own server and is left out). None of them, no answer given and no dead letter's
`reason` / `error.detail` may contain an email, phone number, first or last name, street, city, postal code, the
Klaviyo key, the commercetools client secret or an access token the commercetools stand-in issued.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from demo import sample
from shared.config import Settings
from shared.dead_letters import CONTAINER
from shared.logs import configure_logging
from tests.builders import change, message, pubsub
from tests.conftest import CT_CLIENT_ID, CT_SECRET, KLAVIYO_KEY
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_faults_event import CHANNEL_CONFIG, KlaviyoFront, open_order, seed, serve

EMAIL = "wilhelmina.featherstonehaugh@example.net"
PERSON: dict[str, Any] = {
    "id": sample.uid("customer", "pii"), "version": 1, "customerNumber": "C-PII-1", "email": EMAIL,
    "firstName": "Wilhelmina", "lastName": "Featherstonehaugh", "title": "Dr", "companyName": "Quillbright",
    "dateOfBirth": "1979-02-28", "isEmailVerified": True, "authenticationMode": "Password",
    "addresses": [
        {"id": "home", "firstName": "Wilhelmina", "lastName": "Featherstonehaugh", "streetName": "Marlowe Crescent",
         "streetNumber": "17", "building": "Larkspur House", "postalCode": "TN2 5QX", "city": "Tunbridge Wells",
         "state": "Kent", "country": "GB", "phone": "+441892555017", "mobile": "+447700955017", "email": EMAIL},
        {"id": "work", "firstName": "Wilhelmina", "lastName": "Featherstonehaugh", "streetName": "Pemberton Row",
         "streetNumber": "3", "postalCode": "EC4A 3BF", "city": "London", "country": "GB", "phone": "+442075550303"},
    ],
    "defaultBillingAddressId": "home", "billingAddressIds": ["home"], "shippingAddressIds": ["work"],
    "createdAt": "2026-11-20T10:00:00.000Z", "lastModifiedAt": "2026-11-20T10:00:00.000Z",
}
MOVED = {"id": "home", "firstName": "Wilhelmina", "lastName": "Featherstonehaugh", "streetName": "Gainsborough Mews",
         "streetNumber": "4", "postalCode": "BN1 4GH", "city": "Brighton", "country": "GB",
         "mobile": "+447700955044"}


# --- what must never show ---------------------------------------------------------------------------------------


def personal_data(customers: Iterable[dict[str, Any]]) -> set[str]:
    values: set[str] = set()
    for customer in customers:
        values |= {customer["email"], customer["firstName"], customer["lastName"]}
        for address in customer.get("addresses") or []:
            values |= {address[k] for k in ("firstName", "lastName", "streetName", "postalCode", "city", "phone",
                                             "mobile", "email", "building") if address.get(k)}
    return values


def forbidden(ct: FakeCommercetools, customers: Iterable[dict[str, Any]]) -> list[re.Pattern[str]]:
    """Patterns of everything that must not show: personal data (names, streets, cities, postal codes as whole
    words; phone numbers also by their last 8 digits), the Klaviyo key, the client secret (also inside the
    Basic credentials) and every access token the stand-in issued or the connector sent."""
    tokens = set(ct.tokens) | {r.headers["authorization"].removeprefix("Bearer ") for r in ct.requests
                               if r.headers.get("authorization", "").startswith("Bearer ")}
    assert tokens, "the scenario should have used access tokens"
    basic = base64.b64encode(f"{CT_CLIENT_ID}:{CT_SECRET}".encode()).decode()
    patterns = [re.compile(re.escape(s)) for s in (KLAVIYO_KEY, KLAVIYO_KEY.removeprefix("pk_"), CT_SECRET, basic,
                                                   *tokens)]
    for value in personal_data(customers):
        digits = re.sub(r"\D", "", value)
        if value.startswith("+"):
            patterns.append(re.compile(re.escape(digits[-8:])))
        else:
            patterns.append(re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE))
    return patterns


def leaks(texts: Iterable[str], patterns: list[re.Pattern[str]]) -> list[str]:
    found = []
    for text in texts:
        for variant in {text, unquote(text)}:
            for pattern in patterns:
                if pattern.search(variant):
                    found.append(f"{pattern.pattern!r} in {variant[:300]!r}")
    return found


# --- capturing every log record ------------------------------------------------------------------------------


class Records(logging.Handler):
    """Every record reaching the root logger, as text: message, extra fields and traceback."""

    _PLAIN = logging.Formatter("%(levelname)s %(name)s %(message)s")
    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("werkzeug"):
            return
        extra = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        self.lines.append(f"{self._PLAIN.format(record)} {json.dumps(extra, default=repr)}")


@pytest.fixture
def records() -> Iterator[Records]:
    """Attached by `capture_everything` (configuring the logging replaces the root's handlers)."""
    handler = Records()
    yield handler
    logging.getLogger().removeHandler(handler)


def capture_everything(settings: Settings, records: Records) -> None:
    """The logging `python -m event` configures (LOG_LEVEL), plus `records` at the root."""
    configure_logging(settings.log_level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the stand-ins' access log
    logging.getLogger().addHandler(records)


def dead_letter_texts(ct: FakeCommercetools) -> list[str]:
    values = [o["value"] for o in ct.store["custom-objects"].values() if o["container"] == CONTAINER]
    return [v["reason"] for v in values] + [str((v.get("error") or {}).get("detail")) for v in values]


# --- the scenario -----------------------------------------------------------------------------------------------


def odd_deliveries() -> list[tuple[bytes, int]]:
    """Deliveries carrying personal data where ids and types belong, and the answers they get: malformed ones
    are recorded (202); the two whose only oddity is an id the connector makes itself or does without (a change
    notification's version, the transport's message id) are processed (204)."""
    ids = iter(range(4711, 4800))

    def envelope(notification: Any, message_id: str | None = None) -> bytes:
        return json.dumps(pubsub(notification, message_id or str(next(ids)))).encode()

    good = message("customer", PERSON["id"], "CustomerFirstNameSet", firstName="Wilhelmina")
    return [
        (f'{{"customer": {{"email": "{EMAIL}", "firstName": "Wilhelmina"'.encode(), 202),  # cut short
        (json.dumps({"message": {"messageId": "4800", "data": f"{EMAIL} Marlowe Crescent"}}).encode(), 202),
        (envelope([EMAIL, "+447700955017"]), 202),
        (envelope({**good, "notificationType": EMAIL}), 202),
        (envelope({**good, "type": f"Customer {EMAIL}"}), 202),
        (envelope({**good, "resource": {"typeId": EMAIL, "id": PERSON["id"]}}), 202),
        (envelope({**good, "resource": {"typeId": "customer", "id": EMAIL}}), 202),
        (envelope({**good, "id": f"Wilhelmina Featherstonehaugh <{EMAIL}>"}), 202),
        (json.dumps({**good, "id": EMAIL, "notificationType": "Wilhelmina"}).encode(), 202),  # bare, no envelope
        (json.dumps({"Type": "Notification", "MessageId": EMAIL, "Message": f"Dear Wilhelmina, {EMAIL}"}).encode(),
         202),
        (envelope({**change("ResourceUpdated", "customer", PERSON["id"]), "version": f"3 {EMAIL}"}), 204),
        (envelope(good, message_id=EMAIL), 204),
    ]


def test_deliveries_and_their_failures_leak_no_personal_data_or_secrets(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo, records: Records,
        capsys: pytest.CaptureFixture[str]) -> None:
    seed(ct)  # the sample project: three customers with addresses and phones, orders, a payment, products
    ada, grace, konrad = sample.customers()
    front = KlaviyoFront(klaviyo)
    settings = configure({"customer": {"deduplication": {"enabled": True}}, "event": {"timeBudgetSeconds": 1},
                          **CHANNEL_CONFIG}, KLAVIYO_API_URL=front.url)
    assert settings.log_level == "DEBUG"
    capture_everything(settings, records)
    capsys.readouterr()
    answers: list[httpx.Response] = []
    unexpected: list[tuple[int, int, str]] = []  # (expected, answered, reason): checked once leaks are
    order = open_order(20)
    order.update(customerId=PERSON["id"], customerEmail=EMAIL, billingAddress=PERSON["addresses"][0],
                 shippingAddress=PERSON["addresses"][1])
    payment_id = sample.uid("payment", 1)
    refund = next(t for t in ct.store["payments"][payment_id]["transactions"] if t["type"] == "Refund")
    entry = ct.store["inventory"][sample.uid("inventory", "OXFORD-SHIRT-L")]
    entry.update(version=3, availableQuantity=0, quantityOnStock=0)
    echo = {"errors": [{"id": "e-1", "status": 400, "code": "invalid", "title": "Invalid input.",
                        "detail": f"{EMAIL} is not a valid email address; '{PERSON['firstName']}' was refused "
                                  f"(+447700955017)", "source": {"pointer": "/data/attributes/email"}}]}
    ct_echo = {"statusCode": 400, "message": f"The value '\"{grace['email']}\"' is not valid for field 'email'.",
               "errors": [{"code": "InvalidField", "message": f"The value '\"{grace['email']}\"' is not valid for "
                                                              "field 'email'.", "invalidValue": grace["email"]}]}

    try:
        with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
            def deliver(notification: Any, expected: int) -> None:
                body = notification if isinstance(notification, bytes) else json.dumps(pubsub(notification))
                response = client.post("/", content=body, headers={"Content-Type": "application/json"})
                answers.append(response)
                if response.status_code != expected:
                    unexpected.append((expected, response.status_code, response.headers.get("x-outcome-reason")))

            # Everyday traffic.
            deliver(message("customer", PERSON["id"], "CustomerCreated", customer=PERSON), 204)
            ct.add("customers", {**PERSON, "version": 2, "addresses": [MOVED, PERSON["addresses"][1]]})
            deliver(message("customer", PERSON["id"], "CustomerAddressChanged", address=MOVED), 204)
            deliver(message("order", order["id"], "OrderCreated", order=order), 204)
            deliver(message("payment", payment_id, "PaymentTransactionAdded", transaction=refund), 204)
            deliver(message("product", sample.uid("product", "oxford-shirt"), "ProductPublished"), 204)
            deliver(change("ResourceUpdated", "inventory-entry", entry["id"], version=3,
                           resourceUserProvidedIdentifiers={"sku": entry["sku"]}), 204)
            deliver(change("ResourceUpdated", "customer", konrad["id"], version=2), 204)
            # Klaviyo refuses a profile and quotes it back: acknowledged, recorded.
            klaviyo.fail_next("POST", "/api/profile-import", 400, body=echo)
            deliver(message("customer", ada["id"], "CustomerFirstNameSet", firstName=ada["firstName"]), 202)
            # commercetools refuses a read and quotes the value: recorded; then it fails with a 503 echoing it.
            ct.fail_next("GET", r"/customers/", 400, body=ct_echo)
            deliver(change("ResourceUpdated", "customer", grace["id"], version=3), 202)
            ct.fail_next("GET", rf"/customers/{ada['id']}", 503, body={**ct_echo, "statusCode": 503}, times=4)
            deliver(change("ResourceUpdated", "customer", ada["id"], version=4), 503)
            # Malformed deliveries carrying personal data.
            for body, status in odd_deliveries():
                deliver(body, status)
            # Throttling: waited out, then longer than the budget.
            front.misbehave("POST", "/api/profile-import", "refuse", times=2, status=429,
                            headers={"Retry-After": "0"})
            deliver(change("ResourceUpdated", "customer", PERSON["id"], version=2), 204)
            front.misbehave("*", "/api/.*", "refuse", times=1, status=429, headers={"Retry-After": "30"})
            deliver(change("ResourceUpdated", "customer", PERSON["id"], version=2), 503)
            # A timeout, a reset after the write, a connection closed without an answer.
            front.misbehave("POST", "/api/profile-import", "slow", seconds=1.3)
            deliver(change("ResourceUpdated", "customer", grace["id"], version=5), 503)
            front.misbehave("POST", "/api/events", "apply-then-reset")
            deliver(message("order", order["id"], "OrderCreated", order=order), 204)
            front.misbehave("POST", "/api/profile-import", "close", times=None)
            deliver(change("ResourceUpdated", "customer", konrad["id"], version=2), 503)
            front.calm()
            # Grace's new email is Konrad's, whose profile has it: Klaviyo answers 409, acknowledged and recorded.
            front.wait_idle()  # Grace's slow profile import has landed
            ct.store["customers"][grace["id"]]["email"] = konrad["email"]
            deliver(change("ResourceUpdated", "customer", grace["id"], version=6), 202)
    finally:
        front.close()

    captured = capsys.readouterr()
    stdout = [line for line in captured.out.splitlines() if line.strip()]
    logged = [json.loads(line) for line in stdout]
    texts = [*stdout, captured.err, *records.lines, *dead_letter_texts(ct),
             *(a.text + " " + a.headers.get("x-outcome-reason", "") for a in answers)]
    patterns = forbidden(ct, [PERSON, {**PERSON, "addresses": [MOVED]}, ada, grace, konrad])
    assert leaks(texts, patterns) == []
    assert unexpected == []
    # The scenario did what it says, and its lines were captured both ways.
    assert len(logged) > 30 and {e["logger"] for e in logged} >= {"event.handler", "shared.http", "uvicorn.error"}
    assert len([e for e in logged if e["severity"] == "ERROR"]) >= 10  # the dead letters were logged
    assert len(records.lines) >= len(logged)
    assert len(dead_letter_texts(ct)) == 2 * 13  # reason and detail of each: 10 odd deliveries, 400, 400, 409


def test_bulk_import_and_its_failures_leak_no_personal_data_or_secrets(
        configure: Callable[..., Settings], ct: FakeCommercetools, klaviyo: FakeKlaviyo, records: Records,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The job's bulk import of everything (`job.service.JobService`, as the scheduler runs it), while Klaviyo
    refuses an event batch and then an event quoting them back, throttles a profile job, and commercetools fails
    a page read with a body echoing a value. Logs and the stored import records' errors must carry none of it."""
    from job.service import JobService  # the job application; imported here so that the event tests stand alone
    from job.state import CONTAINER as IMPORTS
    from shared.context import build_context, close_context

    seed(ct)
    ct.add("customers", PERSON)
    order = open_order(20)
    order.update(customerId=PERSON["id"], customerEmail=EMAIL, billingAddress=PERSON["addresses"][0])
    ct.add("orders", order)
    settings = configure(CHANNEL_CONFIG)
    capture_everything(settings, records)
    capsys.readouterr()
    echo = {"errors": [{"id": "e-2", "status": 400, "code": "invalid", "title": "Invalid input.",
                        "detail": f"Profile {EMAIL} (+447700955017) is invalid for '{PERSON['lastName']}'",
                        "source": {"pointer": "/data/attributes/profile"}}]}
    klaviyo.fail_next("POST", "/api/event-bulk-create-jobs", 400, body=echo)
    klaviyo.fail_next("POST", "/api/events", 400, body=echo)
    klaviyo.fail_next("POST", "/api/profile-bulk-import-jobs", 429, headers={"Retry-After": "0"})
    ct.fail_next("GET", r"/orders$", 503, body={"statusCode": 503, "message": f"'{EMAIL}' unavailable",
                                                "errors": [{"code": "General", "message": f"'{EMAIL}' unavailable"}]})
    context = build_context(settings)
    try:
        service = JobService(context)
        service.request("all", {})
        summaries = service.run(budget_seconds=60)
    finally:
        close_context(context)

    assert {s["type"]: s["status"] for s in summaries} == {t: "completed" for t in
                                                          ("categories", "products", "customers", "orders")}
    stored = [o["value"] for o in ct.store["custom-objects"].values() if o["container"] == IMPORTS]
    errors = [str(v.get("lastError")) for v in stored] + [str(e) for v in stored for e in v.get("errors") or []]
    assert any("klaviyo 400" in e for e in errors)  # the refused event was recorded, redacted
    captured = capsys.readouterr()
    stdout = [line for line in captured.out.splitlines() if line.strip()]
    texts = [*stdout, captured.err, *records.lines, *errors, json.dumps(summaries)]
    patterns = forbidden(ct, [PERSON, *sample.customers()])
    assert leaks(texts, patterns) == []
    assert len(stdout) > 5 and len(records.lines) >= len(stdout)


@pytest.mark.parametrize("fault", ["reset", "close", "slow", "400"])
def test_http_failures_raise_errors_without_request_headers_or_bodies(
        configure: Callable[..., Settings], klaviyo: FakeKlaviyo, fault: str) -> None:
    """What the transport raises when a call fails (no answer, a timeout, a refusal quoting the body) carries
    service, status and a redacted reason only: no chained httpx error (those hold the request, headers and
    all), no header, no body; so no log line or traceback made from it can show them."""
    from shared.deadline import time_budget
    from shared.errors import ApiError
    from shared.klaviyo import Klaviyo

    front = KlaviyoFront(klaviyo)
    settings = configure(KLAVIYO_API_URL=front.url)
    client = Klaviyo(settings.klaviyo, user_agent=settings.user_agent)
    if fault == "400":
        klaviyo.fail_next("POST", "/api/profile-import", 400, body={"errors": [{
            "status": 400, "code": "invalid", "title": "Invalid input.", "source": {"pointer": "/data"},
            "detail": f"{EMAIL} / +447700955017 / '{PERSON['firstName']} {PERSON['lastName']}' refused"}]})
    else:
        front.misbehave("POST", "/api/profile-import", fault, times=None, seconds=1.3)
    profile = {"email": EMAIL, "first_name": PERSON["firstName"], "phone_number": "+447700955017"}
    try:
        with time_budget(1.0), pytest.raises(ApiError) as raised:
            client.upsert_profile(profile)  # (the traceback quotes this line: no literal values on it)
    finally:
        client.close()
        front.wait_idle()
        front.close()
    error = raised.value
    assert error.__cause__ is None and error.__context__ is None
    assert (error.service, error.status is None) == ("klaviyo", fault != "400")
    text = "".join(traceback.format_exception(error)) + repr(error) + str(vars(error)) + error.describe()
    patterns = [re.compile(re.escape(s)) for s in (KLAVIYO_KEY, "Klaviyo-API-Key", "authorization")] + \
        [re.compile(re.escape(v), re.IGNORECASE) for v in (EMAIL, "447700955017", "Featherstonehaugh", "Wilhelmina")]
    assert leaks([text], patterns) == []
