"""Per-request observability that is not metrics: W3C trace context (`trace.py`) and the JSON access log
(`accesslog.py`). Below the proxy: it imports nothing of it, so both the L4 relay and the L7 engine use it."""
