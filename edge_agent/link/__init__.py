"""The link to the broker: escalation under a deadline with safe retries, the circuit
breaker, and which discovered broker may be trusted (pins, certificate names)."""
