"""Run the node agent with `python -m agent`."""

from agent.main import main

main()
