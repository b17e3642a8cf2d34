"""The `cxr-agent` command line: the top wing beside ui/, importing the product, never imported by it."""
