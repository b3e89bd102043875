"""``python -m lmsupervisor.simulator.daemon [--run-as-service]``: the simulated llmster or app process."""

from lmsupervisor.simulator.daemon import main

main()
