"""The `meshlet` CLI (`meshlet.cli`) and the local cluster (`meshlet.lab`): the top of the layering.

They may use every component (to read a node's status, the store, BPF maps) and start them as processes
(`python -m agent|ztunnel|control`); no component imports them.
"""
