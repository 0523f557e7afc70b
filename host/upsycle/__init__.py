"""upsycle host package: proxy, core overlay, client API, bridges, simulator, CLI."""

__version__ = "0.1.0"
