"""``python -m triowsgi module:app``: see :mod:`triowsgi._cli`."""

from ._cli import main

if __name__ == "__main__":
    main()
