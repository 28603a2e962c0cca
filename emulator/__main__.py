"""``python -m emulator`` behaves like ``emulate``."""

from emulator.cli import main

main()
