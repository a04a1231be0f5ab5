"""What every meshlet component agrees on, at the bottom of the layering: identities, node ports and
marks, the config stream and its items (policies among them), and how a long-lived task is kept alive.

agent, bpf, control and ztunnel may import this package; it imports none of them (tests/unit/test_layering.py).
"""
