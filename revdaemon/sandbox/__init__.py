"""Local simulators of the Salesforce and Nue APIs: real HTTP servers on loopback, seeded, with faults.

The sandbox imports nothing from the daemon's clients, mapping or flows: it is an independent witness of
how the two APIs behave (../shared/design/salesforce-api.md and nue-api.md).
"""
