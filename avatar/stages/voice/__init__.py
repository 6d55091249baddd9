"""The voice stage: a store of cloned voices, their clips, and speech synthesis.

Kept free of imports on purpose: `python -m avatar.voice list` imports the store
alone, and nothing here may pull torch or coqui-tts onto that path.
"""
