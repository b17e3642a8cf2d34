"""cxr-agent's ground floor: settings (`cxr_agent.settings`), importable by every layer above.

The product's code lives in knowledge/, tools/, agents/, graph.py, ui/; the command line in cli/.
"""

__version__ = "0.2.0"
