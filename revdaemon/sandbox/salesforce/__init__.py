"""Salesforce API simulator: OAuth token endpoint, REST query/sObjects/collections/composite/limits,
describe, limits, the Tooling API for custom fields and objects, permission sets and field-level security,
faults and admin endpoints, served as a Starlette app (salesforce-api.md).

    sim = SalesforceSim(SalesforceSimSettings(jwt_public_key_pem=public_pem))
    with sim.serve() as server:   # or ServerThread(sim.app)
        ...  # point a client at server.url
"""

from __future__ import annotations

from revdaemon.sandbox.salesforce.app import SalesforceSim
from revdaemon.sandbox.salesforce.keys import generate_rsa_keypair
from revdaemon.sandbox.salesforce.settings import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_CUSTOM_OBJECTS,
    CustomField,
    CustomObject,
    FaultSettings,
    SalesforceSimSettings,
)

__all__ = [
    "DEFAULT_CUSTOM_FIELDS",
    "DEFAULT_CUSTOM_OBJECTS",
    "CustomField",
    "CustomObject",
    "FaultSettings",
    "SalesforceSim",
    "SalesforceSimSettings",
    "generate_rsa_keypair",
]
