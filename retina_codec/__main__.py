"""``python -m retina_codec`` is the ``retina-codec`` command (also under ``torchrun``)."""

from .cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
