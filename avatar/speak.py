"""`python -m avatar.speak`: a shim into the command line (avatar/cli/speak.py)."""

from avatar.cli.speak import main

if __name__ == "__main__":
    main()
