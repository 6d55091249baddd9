"""`python -m avatar`: the same entry point as the `avatar` console script."""

from avatar.cli.app import run

if __name__ == "__main__":
    run()
