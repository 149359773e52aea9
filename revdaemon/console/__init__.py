"""The operators' web console: server-rendered pages over the service layer (revdaemon/service.py)."""
