"""Run the command line as `python -m digest`."""

from digest.cli import main

main()
