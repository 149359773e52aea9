"""Clients for the two APIs: pure wire modules (request building, response parsing) and thin senders."""
