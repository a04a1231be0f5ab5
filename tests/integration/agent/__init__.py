"""Integration tests of the node agent."""
