"""The pipeline's stages, each loading its models under the VRAM guard (`avatar.vram`).

Stages sit above `avatar.vram`, `avatar.config` and `avatar.hardware` and below
`avatar.cli`; a stage never imports the command line or the facades.
"""
