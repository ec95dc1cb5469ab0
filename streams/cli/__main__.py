"""`python -m streams.cli` runs the `pinstream` command."""

from streams.cli import main

main()
