"""`python -m giellm.cli …` (what `accelerate launch -m giellm.cli train …` runs)."""

from giellm.cli import main

main()
