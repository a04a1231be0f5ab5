"""Where control's objects come from: the `file` source (a directory of YAML, the default) and, later,
the `kubernetes` source. Both fit the small interface in `base`."""
