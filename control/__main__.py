"""Run with `python -m control`."""

from control.main import main

main()
