"""Outgoing webhooks: envelope, signature, path token, retries, duplicates, delays, reordering."""

from __future__ import annotations

import hashlib
import hmac
import time

from nue_fixtures import receiver, running

SECRET = "sandbox-webhook-secret"


def verify(header: str, body: bytes, secret: str = SECRET) -> bool:
    """What a listener does with `Nue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= 300


def test_scenario_events_are_delivered_signed_in_the_envelope() -> None:
    with receiver() as (target, url), running(webhook_targets=[url]) as nue:
        scenario = nue.sim.scenario
        customer = scenario.create_customer(0)
        result = scenario.create_and_activate_order(customer["id"], opportunity=0, generate_invoice=True,
                                                    activate_invoice=True)
        invoice = result["invoices"][0]
        scenario.pay_invoice(invoice["id"])
        scenario.commit_quote(0)
        scenario.requote(0, {"SEAT-VOL": 30})
        assert nue.sim.webhooks.wait_idle(10)
        types = [e["type"] for e in target.events()]
        assert types == ["customer.created", "order.created", "order.activated", "subscription.created",
                         "subscription.created", "invoice.created", "invoice.activated", "invoice.updated",
                         "quote.created", "quote.updated"]
        first = target.received[0]
        assert first.path == "/hooks/nue"
        assert verify(first.headers["nue-signature"], first.body)
        assert not verify(first.headers["nue-signature"], first.body.replace(b"Acme", b"Acne"))
        event = first.event
        assert set(event) == {"id", "type", "createdDate", "data"}
        assert event["data"]["externalId"] == customer["externalId"]
        paid = target.events()[7]["data"]
        assert paid["id"] == invoice["id"] and paid["paymentStatus"] == "Paid"
        log = nue.sim.webhooks.deliveries()
        assert len(log) == 10 and all(d.ok and d.attempt == 1 for d in log)
        assert [d.event_id for d in log] == [e["id"] for e in target.events()]


def test_non_2xx_and_connection_errors_are_retried() -> None:
    with receiver(script=[500, 503]) as (target, url), running(webhook_targets=[url]) as nue:
        customer = nue.sim.scenario.create_customer(1)
        assert nue.sim.webhooks.wait_idle(10)
        attempts = [(d.attempt, d.status) for d in nue.sim.webhooks.deliveries()]
        assert attempts == [(1, 500), (2, 503), (3, 200)]
        assert {e["id"] for e in target.events()} == {nue.sim.webhooks.published()[0]["id"]}
        assert target.events()[0]["data"]["id"] == customer["id"]
    with running(webhook_targets=["http://127.0.0.1:9/unreachable"], webhook_max_attempts=3) as nue:
        nue.sim.scenario.create_customer(0)
        assert nue.sim.webhooks.wait_idle(10)
        log = nue.sim.webhooks.deliveries()
        assert [d.attempt for d in log] == [1, 2, 3]
        assert all(d.status is None and d.error for d in log) and log[-1].final


def test_path_token_mode_addresses_the_secret_path_without_signature() -> None:
    with receiver() as (target, url), running(webhook_targets=[url], webhook_auth="path_token",
                                              webhook_path_token="tok-123") as nue:
        nue.sim.scenario.create_customer(2)
        assert nue.sim.webhooks.wait_idle(10)
        assert target.received[0].path == "/hooks/nue/tok-123"
        assert "nue-signature" not in target.received[0].headers


def test_duplicates_share_the_event_id() -> None:
    with receiver() as (target, url), running(webhook_targets=[url], webhook_duplicate_rate=1.0) as nue:
        nue.sim.scenario.create_customer(0)
        nue.sim.scenario.create_customer(1)
        assert nue.sim.webhooks.wait_idle(10)
        ids = [e["id"] for e in target.events()]
        assert len(ids) == 4 and len(set(ids)) == 2
        assert sum(d.duplicate for d in nue.sim.webhooks.deliveries()) == 2


def test_a_reordered_event_is_overtaken_by_the_next_one() -> None:
    with receiver() as (target, url), running(webhook_targets=[url]) as nue:
        nue.sim.settings.webhook_reorder_rate = 1.0
        first = nue.sim.scenario.create_customer(0)
        nue.sim.settings.webhook_reorder_rate = 0.0
        second = nue.sim.scenario.create_customer(1)
        assert nue.sim.webhooks.flush(10)
        assert [e["data"]["id"] for e in target.events()] == [second["id"], first["id"]]


def test_delays_and_flush_keep_everything_delivered() -> None:
    with receiver() as (target, url), running(webhook_targets=[url], webhook_delay_rate=1.0,
                                              webhook_delay_seconds=60) as nue:
        nue.sim.scenario.create_customer(0)
        assert not nue.sim.webhooks.wait_idle(0.1)  # held for a minute
        assert nue.sim.webhooks.flush(10)
        assert [d.delayed for d in nue.sim.webhooks.deliveries()] == [True]
        assert len(target.events()) == 1


def test_webhook_fault_draws_are_deterministic_for_the_seed() -> None:
    def pattern(seed: int) -> list[tuple[str, bool]]:
        with receiver() as (_, url), running(seed=seed, webhook_targets=[url], webhook_duplicate_rate=0.5) as nue:
            for index in range(6):
                nue.sim.scenario.create_customer(index)
            assert nue.sim.webhooks.wait_idle(10)
            return [(d.event_id, d.duplicate) for d in nue.sim.webhooks.deliveries()]

    first = pattern(7)
    assert 0 < sum(dup for _, dup in first) < 6
    assert first == pattern(7)
    assert first != pattern(8)


def test_event_type_filter_and_two_targets() -> None:
    with receiver() as (a, url_a), receiver() as (b, url_b), running(
            webhook_targets=[url_a, url_b], webhook_event_types=("order.activated",)) as nue:
        customer = nue.sim.scenario.create_customer(0)
        nue.sim.scenario.create_and_activate_order(customer["id"], opportunity=0)
        assert nue.sim.webhooks.wait_idle(10)
        assert [e["type"] for e in a.events()] == ["order.activated"] == [e["type"] for e in b.events()]
