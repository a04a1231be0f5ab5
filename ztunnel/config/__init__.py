"""ztunnel's side of the config stream: `state` applies snapshots and deltas (sans-IO), `client` talks to
control over a WebSocket and keeps serving the last good state while control is away."""
