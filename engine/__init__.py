"""dit-workbench engine: all computation. Never imports textual or workbench."""

__version__ = "0.1.0"
