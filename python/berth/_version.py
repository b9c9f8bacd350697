"""berth's version, read by setup and by the package."""
__version__ = "0.1.0"
