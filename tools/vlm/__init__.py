"""RadVLM (LLaVA-OneVision) tool: prompts, backends, output parsing."""
