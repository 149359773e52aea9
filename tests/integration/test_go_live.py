"""Going live against the simulators: an empty org is found wanting, `setup salesforce --apply` makes it ready,
and the demo's story then syncs into it; an org whose integration user may not see a field says so."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from revdaemon.cli import EXIT_ONLINE, main, online_check
from revdaemon.cli_setup import plan_and_apply, required_by
from revdaemon.demo import demo_settings, run_demo
from revdaemon.engine.clients import build_clients
from revdaemon.limits import RetryPolicy
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from revdaemon.setup import golive
from revdaemon.setup.metadata import PERMISSION_SET
from revdaemon.setup.plan import Status
from tests.integration.engine_fixtures import daemon_settings
from tests.integration.test_sandbox_cli import sandbox_config

pytestmark = pytest.mark.anyio

EMPTY_ORG = {"custom_fields": (), "custom_objects": ()}


def sandbox(tmp_path: Path, **sf_settings: object) -> Sandbox:
    return create_sandbox(key_dir=tmp_path / "keys", seed=1, sf_settings=dict(sf_settings)).start_threads()


def writes_to(box: Sandbox, path_part: str) -> list[str]:
    return [f"{entry.method} {entry.path}" for entry in box.salesforce.log.entries()
            if entry.method in ("POST", "PATCH") and path_part in entry.path]


async def test_an_empty_org_is_set_up_and_then_syncs_the_demo_story(tmp_path: Path) -> None:
    """The whole go-live on the simulators: the check fails with its fixes named, setup applies them, the check
    passes, and the demo's story then syncs into the org setup made."""
    box = sandbox(tmp_path, **EMPTY_ORG)
    try:
        settings = demo_settings(daemon_settings(box, tmp_path), box)
        failing = await online_check(settings)
        assert not failing["ok"]
        fixes = {line["name"]: line["fix"] for line in failing["checks"] if not line["ok"]}
        assert set(fixes) == {"salesforce fields", "integration user"}
        assert "--apply" in fixes["salesforce fields"] and "--assign" in fixes["integration user"]
        required = required_by(settings)
        before, _ = await plan_and_apply(settings, required, apply_changes=False, assign=False)
        missing = {row.requirement.name for row in before if row.status is Status.MISSING}
        assert {"Nue_Billing_Event__c", "Account.MRR__c", "Opportunity.Nue_Order_Id__c"} <= missing
        assert all(row.applies for row in before if not row.ok)  # all of them revdaemon's own: it can make them
        assert not writes_to(box, "/tooling/")  # a plan writes nothing

        after, actions = await plan_and_apply(settings, required, apply_changes=True, assign=True)
        assert all(action.ok for action in actions), actions
        assert [row.requirement.name for row in after if not row.ok] == []
        assert any("assigned the permission set" in action.what for action in actions)
        passing = await online_check(settings)
        assert passing["ok"] and all(line["ok"] for line in passing["checks"]), passing

        again, actions = await plan_and_apply(settings, required, apply_changes=True, assign=True)
        assert all(row.ok for row in again)  # a second run makes, grants and assigns nothing again
        user = box.salesforce.integration_user_id
        assert [a.what for a in actions] == [f"permission set already assigned to the user {user}"]

        summary = await run_demo(settings, box=box)
        assert summary["events_waiting"] == 0 and summary["dead_letters"] == 0
        assert summary["salesforce_writes"] >= 3
        billing = box.salesforce.records("Nue_Billing_Event__c")
        assert billing and all(record.get("Nue_Event_Key__c") for record in billing)
    finally:
        box.close()


async def test_a_field_hidden_from_the_integration_user_is_named_as_a_permission_problem(tmp_path: Path) -> None:
    """The field exists but field-level security hides it: the plan says so, and apply grants it (a create of it
    is refused as a duplicate) instead of leaving a flow parked with no reason."""
    box = sandbox(tmp_path, ungranted_fields=("Account.MRR__c",))
    try:
        settings = demo_settings(daemon_settings(box, tmp_path), box)
        required = required_by(settings)
        before, _ = await plan_and_apply(settings, required, apply_changes=False, assign=False)
        [row] = [r for r in before if not r.ok]
        assert row.requirement.name == "Account.MRR__c" and "not visible to the integration user" in row.detail
        after, actions = await plan_and_apply(settings, required, apply_changes=True, assign=True)
        assert any("Account.MRR__c exists (hidden from the integration user)" in a.what for a in actions), actions
        assert all(row.ok for row in after)
        assert [r["Name"] for r in box.salesforce.records("PermissionSet")].count(PERMISSION_SET) == 1
    finally:
        box.close()


def test_the_command_exits_4_with_the_plan_and_exports_a_dx_folder(tmp_path: Path) -> None:
    box = sandbox(tmp_path, **EMPTY_ORG)
    try:
        config = sandbox_config(box, tmp_path)
        runner = CliRunner()
        result = runner.invoke(main, ["setup", "salesforce", "--config", str(config), "--json"])
        assert result.exit_code == EXIT_ONLINE, result.output
        report = json.loads(result.stdout)
        assert not report["ok"] and any(row["name"] == "Account.MRR__c" and row["status"] == "missing"
                                        for row in report["plan"])
        exported = runner.invoke(main, ["setup", "salesforce", "--config", str(config), "--export",
                                        str(tmp_path / "dx")])
        assert exported.exit_code == 0, exported.output
        assert (tmp_path / "dx" / "force-app/main/default/objects/Account/fields/MRR__c.field-meta.xml").exists()
    finally:
        box.close()


def test_check_online_lists_the_fixes_then_passes_once_setup_has_applied(tmp_path: Path) -> None:
    """The go-live check as a person runs it: an empty org fails with the fix named; setup --apply --assign;
    the same check then passes, every line ok."""
    box = sandbox(tmp_path, **EMPTY_ORG)
    try:
        config = sandbox_config(box, tmp_path)
        runner = CliRunner()
        check = ["check", "--online", "--json", "--config", str(config)]
        before = runner.invoke(main, check)
        assert before.exit_code == EXIT_ONLINE, before.output
        lines = {line["name"]: line for line in json.loads(before.stdout)["online"]["checks"]}
        assert not lines["salesforce fields"]["ok"] and "--apply" in lines["salesforce fields"]["fix"]
        assert not lines["integration user"]["ok"] and "not assigned" in lines["integration user"]["detail"]
        applied = runner.invoke(main, ["setup", "salesforce", "--apply", "--assign", "--config", str(config)])
        assert applied.exit_code == 0, applied.output
        after = runner.invoke(main, check)
        assert after.exit_code == 0, after.output
        report = json.loads(after.stdout)["online"]
        assert report["ok"] and all(line["ok"] for line in report["checks"])
        assert "assigned" in {line["name"]: line for line in report["checks"]}["integration user"]["detail"]
    finally:
        box.close()


async def test_an_administrator_assigns_the_permission_set_to_another_user(tmp_path: Path) -> None:
    """Setup run by one user (an administrator) assigns the permission set to the integration user by username,
    even when the org already looks ready to the one running it; an unknown username is a failed step."""
    box = sandbox(tmp_path)
    try:
        settings = demo_settings(daemon_settings(box, tmp_path), box)
        required = required_by(settings)
        _, actions = await plan_and_apply(settings, required, apply_changes=True, assign=False,
                                          assign_to="sam.success@revdaemon.sandbox")
        assert actions[-1].what == "assigned the permission set to the user sam.success@revdaemon.sandbox"
        [assignment] = box.salesforce.records("PermissionSetAssignment")
        [sam] = [u for u in box.salesforce.records("User") if u["Username"] == "sam.success@revdaemon.sandbox"]
        assert assignment["AssigneeId"] == sam["Id"]
        _, actions = await plan_and_apply(settings, required, apply_changes=True, assign=False,
                                          assign_to="nobody@example.com")
        assert not actions[-1].ok and actions[-1].detail == "no user has that username"
    finally:
        box.close()


async def test_a_field_created_but_its_answer_lost_is_not_made_twice(tmp_path: Path) -> None:
    """The Tooling API applies a field's create and the answer is lost: the step is reported failed (its outcome
    unknown), and the next run finds the field, makes no second one, and finishes the setup."""
    box = sandbox(tmp_path, **EMPTY_ORG)
    try:
        settings = demo_settings(daemon_settings(box, tmp_path), box)
        required = required_by(settings)
        box.salesforce.set_faults(applied_drop_next=1, applied_paths=("POST /tooling/sobjects/CustomField",))
        _, first = await plan_and_apply(settings, required, apply_changes=True, assign=True)
        assert box.salesforce.faults_fired()["applied_drop"] == 1
        assert [a.ok for a in first].count(False) == 1
        after, second = await plan_and_apply(settings, required, apply_changes=True, assign=True)
        assert all(action.ok for action in second) and all(row.ok for row in after)
        # Applied once each: the one whose answer was lost, and every other; the retry of the lost one met the
        # field (hidden until granted) and was refused as a duplicate, never made twice.
        applied = [e for e in box.salesforce.log.entries() if e.method == "POST"
                   and e.path.endswith("/tooling/sobjects/CustomField") and (e.status == 201 or e.fault)]
        own = {row.requirement.name for row in after if row.requirement.field and row.requirement.definition}
        assert len(applied) == len(own)
    finally:
        box.close()


async def test_the_check_names_change_data_capture_not_selected_for_the_opportunity(tmp_path: Path) -> None:
    """With Change Data Capture on but Opportunity not selected in Setup, the go-live check says so and how to fix
    it (the daemon would otherwise wait for change events that never come, the poll its only trigger)."""
    box = sandbox(tmp_path)
    try:
        settings = demo_settings(daemon_settings(box, tmp_path), box)
        assert settings.change_data_capture.enabled
        box.salesforce.select_for_cdc("Opportunity", False)
        cdc = {line["name"]: line for line in (await online_check(settings))["checks"]}["change data capture"]
        assert not cdc["ok"] and "/data/OpportunityChangeEvent" in cdc["detail"]
        assert "Setup > Integrations > Change Data Capture: select Opportunity" in cdc["fix"]
        box.salesforce.select_for_cdc("Opportunity", True)
        async with httpx.AsyncClient() as http:
            salesforce, _ = build_clients(settings, http, RetryPolicy(max_attempts=1))
            selected = await golive.change_data_capture_check(settings, salesforce)
            assert selected.ok, selected
            off = settings.model_copy(update={"change_data_capture": settings.change_data_capture.model_copy(
                update={"enabled": False})})
            line = await golive.change_data_capture_check(off, salesforce)
        assert line.ok and line.detail.startswith("off: a won deal reaches Nue at the next Salesforce poll")
    finally:
        box.close()
