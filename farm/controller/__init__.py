"""The controller: hands jobs to agents, keeps leases, collates results."""
