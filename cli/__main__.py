"""``python -m omniret.cli``: the ``omniret`` command."""

from omniret.cli import main

if __name__ == "__main__":
    main()
