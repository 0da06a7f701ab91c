"""``python -m infonce_cli``: the same as the ``infonce`` command."""

from .cli import main

if __name__ == "__main__":
    main()
