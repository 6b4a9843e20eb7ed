"""Where a request goes: the one pure ``route()`` decision, the threshold policy that sets τ
from telemetry, the pre-route that may skip the local model, and the escalation budget."""
