"""``python -m omniret``: the ``omniret`` command.

The core imports nothing above it; this entry module is run, never imported, so naming the CLI here
keeps the arrows one way.
"""

from omniret.cli import main

if __name__ == "__main__":
    main()
