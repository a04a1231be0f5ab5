"""The `meshlet` command line: the local lab today; node status and debugging as the agent grows."""
