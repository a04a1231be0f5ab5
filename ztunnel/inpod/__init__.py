"""In-pod mode: ztunnel receives each enrolled pod's netns from the node agent (ZDS) and opens its
listeners inside it. `protocol` is the ZDS wire schema, shared with the agent (its server side)."""
