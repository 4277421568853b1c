"""``python -m bridge.cli``: the same command line as the installed ``bridge`` script."""

from bridge.cli import main

main()
