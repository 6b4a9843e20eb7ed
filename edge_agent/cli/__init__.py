"""``edge-agent``, the command line: ask, serve, telemetry, simulate, calibrate, eval,
models, specialists, cache."""
