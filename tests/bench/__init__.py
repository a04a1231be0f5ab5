"""The benchmark (issue #7): direct vs an HAProxy mTLS pair vs meshlet, on a lab on this machine.

Not tests: nothing here is collected by pytest (no test_ modules). Run it with `bash .ci/bench`;
`run.py` says what it does. The parsing and the ratios are unit-tested in tests/unit/bench.
"""
