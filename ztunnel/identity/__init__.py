"""Workload identities on this node: keys made here, certificates from control, renewed before expiry."""
