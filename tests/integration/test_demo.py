"""The demo is the whole path: simulated Nue webhooks -> listener -> inbox -> workers -> Salesforce."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from revdaemon.config import load_settings
from revdaemon.demo import run_demo

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_story_syncs_every_account(tmp_path: Path) -> None:
    """Every webhook of the story is processed, nothing is left or dead, and Salesforce got the writes."""
    settings = load_settings(ROOT / "config.yaml", environ={"REVDAEMON_STATE_DIR": str(tmp_path)})
    console = Console(record=True, width=120)
    summary = await run_demo(settings, console=console)
    assert summary["events_done"] >= 15
    assert summary["events_waiting"] == 0 and summary["dead_letters"] == 0
    assert summary["salesforce_writes"] >= 3
    text = " ".join(console.export_text().split())
    assert "Acme Corp" in text and "3,900.00" in text  # the amendment's new MRR reached Salesforce
    assert "Paid" in text and "TransferError" in text  # the payment and the failed collection were logged
    assert "shows quote v2" in text and "1 amendment notes" in text
    assert "0 renewal opportunities" in text and "6 renewal opportunities" in text  # the sign-up's too
    # A customer made in Nue arrives as an account with its contacts and its state; an upsell as an amendment
    # opportunity in the pipeline.
    assert "Zephyr Analytics │ Active │ 1,920.00" in text and "contacts from Nue: Ada Byron, Bill Payne" in text
    assert "amendment opportunity Acme Corp - Upsell" in text and "(Upsell, 30,000.00)" in text
    assert (tmp_path / "demo" / "revdaemon.sqlite3").exists()
