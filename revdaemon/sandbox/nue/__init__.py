"""The Nue simulator: a Starlette app reproducing nue-api.md ([doc] shapes exactly, [assumed] ones as written,
each assumption in wire.py and behind a NueSimSettings field), with webhooks and a scenario driver.

    sim = NueSim(NueSimSettings(webhook_targets=[url]), build_seed(1))
    with ServerThread(sim.app) as server: ...
    sim.close()
"""

from __future__ import annotations

from revdaemon.sandbox.nue.errors import ApiError
from revdaemon.sandbox.nue.scenario import Scenario
from revdaemon.sandbox.nue.settings import NueSimSettings
from revdaemon.sandbox.nue.sim import NueSim
from revdaemon.sandbox.nue.webhooks import DeliveryAttempt, WebhookDispatcher
from revdaemon.sandbox.nue.wire import WEBHOOK_EVENT_TYPES

__all__ = ["WEBHOOK_EVENT_TYPES", "ApiError", "DeliveryAttempt", "NueSim", "NueSimSettings", "Scenario",
           "WebhookDispatcher"]
