"""The engine: wires the store, the clients, the listener, the pollers and the workers together."""
