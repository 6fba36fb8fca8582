"""The sink contract suite, its per-sink harnesses and the loopback peers they talk to."""
