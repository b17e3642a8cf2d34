"""cxr-agent: settings and command line. The product's code lives in knowledge/, tools/, agents/, graph.py, ui/."""

__version__ = "0.1.0"
