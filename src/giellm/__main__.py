"""`python -m giellm …`: the `giellm` command."""

from giellm.cli import main

main()
