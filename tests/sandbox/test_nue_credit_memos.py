"""Credit memos [doc]: GET /credit-memos, /customers/{id}/credit-memos, /credit-memos/{id}, and
POST /billing/credit-memos:apply, through real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from nue_fixtures import API_KEY, Running, running

from revdaemon.sandbox.nue import NueSim, NueSimSettings
from revdaemon.sandbox.seed import build_seed
from revdaemon.sandbox.server import ServerThread


def _customer_with_invoice(nue: Running) -> tuple[dict[str, Any], dict[str, Any]]:
    scenario = nue.sim.scenario
    customer = scenario.create_customer(0)
    scenario.create_and_activate_order(customer["id"], opportunity=0)
    invoice = scenario.post_invoice(customer["id"], activate=True)
    return customer, invoice


def test_list_get_and_customer_scoped_reads() -> None:
    with running() as nue:
        customer, invoice = _customer_with_invoice(nue)
        admin = nue.url + "/__sandbox/scenario/issue_credit_memo"
        memo = httpx.post(admin, json={"customer": customer["id"], "amount": "40.00"}).json()["result"]
        assert memo["status"] == "Active" and memo["source"] == "Standalone" and memo["name"].startswith("CM-")
        other = nue.sim.scenario.create_customer(1)
        nue.sim.scenario.issue_credit_memo(other["id"], "10", invoice_id=None)

        listed = nue.client.get("/credit-memos", params={"page": 1, "limit": 1})
        body = listed.json()
        assert listed.status_code == 200 and body["status"] == "success" and body["pagination"]["total"] == 2
        assert len(body["data"]) == 1
        mine = nue.ok(nue.client.get(f"/customers/{customer['id']}/credit-memos"))
        assert [m["id"] for m in mine] == [memo["id"]]
        assert mine[0]["amount"] == 40 and mine[0]["balance"] == 40 and mine[0]["paymentStatus"] == "NotTransferred"
        filtered = nue.client.get("/credit-memos?balance>=20")
        assert [m["id"] for m in filtered.json()["data"]] == [memo["id"]]
        one = nue.ok(nue.client.get(f"/credit-memos/{memo['id']}"))
        record = one[0] if isinstance(one, list) else one
        assert record["id"] == memo["id"] and record["customerId"] == customer["id"]
        assert nue.client.get("/credit-memos/nope").status_code == 404
        assert nue.client.get(f"/customers/{other['id']}/credit-memos/{memo['id']}").status_code == 404
        assert nue.client.get("/customers/nobody/credit-memos").status_code == 404
        assert invoice["status"] == "Active"


def test_apply_moves_both_balances_all_or_nothing() -> None:
    with running() as nue:
        customer, invoice = _customer_with_invoice(nue)
        memo = nue.sim.scenario.issue_credit_memo(customer["id"], "30")
        too_much = {"appliedInvoices": [{"invoiceId": invoice["id"], "creditMemoId": memo["id"],
                                         "transactionAmount": 20},
                                        {"invoiceId": invoice["id"], "creditMemoId": memo["id"],
                                         "transactionAmount": 20}]}
        assert nue.client.post("/billing/credit-memos:apply", json=too_much).status_code == 422
        untouched = nue.ok(nue.client.get(f"/credit-memos/{memo['id']}"))
        assert (untouched[0] if isinstance(untouched, list) else untouched)["balance"] == 30

        applied = nue.ok(nue.client.post("/billing/credit-memos:apply", json={"appliedInvoices": [
            {"invoiceId": invoice["id"], "creditMemoId": memo["id"], "transactionAmount": 30}]}))
        assert applied["appliedInvoices"][0]["appliedAmount"] == 30
        assert applied["creditMemos"][0]["balance"] == 0 and applied["creditMemos"][0]["paymentStatus"] == "Applied"
        after = nue.ok(nue.client.get(f"/invoices/{invoice['id']}", params={"includes": "paymentApplications"}))
        after = after[0] if isinstance(after, list) else after
        assert after["balance"] == invoice["balance"] - 30 and after["paymentStatus"] == "PartiallyPaid"
        assert after["paymentApplications"][0]["creditMemoId"] == memo["id"]
        assert nue.client.post("/billing/credit-memos:apply", json={"appliedInvoices": []}).status_code == 400


@contextmanager
def _brownfield(deals: int) -> Iterator[Running]:
    sim = NueSim(NueSimSettings(), build_seed(1, brownfield=deals))
    try:
        with ServerThread(sim.app) as server, httpx.Client(
                base_url=server.url, headers={"nue-api-key": API_KEY}, timeout=10) as client:
            yield Running(sim=sim, url=server.url, client=client)
    finally:
        sim.close()


def test_a_brownfield_tenant_has_credit_memos_to_read() -> None:
    """The seed: each customer already in the tenant has a standalone credit memo."""
    with _brownfield(6) as nue:
        memos = nue.client.get("/credit-memos").json()
        assert memos["pagination"]["total"] == len(nue.sim.store.customers) > 0
        assert {m["customerId"] for m in memos["data"]} == set(nue.sim.store.customers)
