"""Specialist tools: ingestion, classifier, VLM, retrieval, and the registry for custom tools."""
