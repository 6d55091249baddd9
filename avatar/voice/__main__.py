"""`python -m avatar.voice`: a shim into the command line (avatar/cli/voice.py)."""

from avatar.cli.voice import run

if __name__ == "__main__":
    run()
