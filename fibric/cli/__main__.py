"""`python -m fibric.cli`, for environments without the console script."""

from fibric.cli import root

root.main()
