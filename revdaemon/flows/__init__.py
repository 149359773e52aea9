"""The sync flows: pure functions from an event and the state looked up for it to a plan of writes."""
