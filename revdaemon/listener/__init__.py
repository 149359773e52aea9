"""The webhook listener: HTTP/1.1 on h11 over anyio sockets, in the daemon's own event loop."""
