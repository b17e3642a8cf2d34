"""reconciling"""
