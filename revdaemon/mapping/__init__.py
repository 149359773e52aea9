"""Declarative field mapping: extra Salesforce fields a flow writes, declared in config.yaml. Pure."""
