"""The ``retina-codec`` command line: one module per sub-command."""
