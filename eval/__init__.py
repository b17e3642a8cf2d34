"""Evaluation harness behind `cxr-agent eval`: labelled-folder metrics (classify, ground), report metrics,
router accuracy and the weight-free reconciler simulation. Modules: data (label files), metrics, cache
(resumable per-image results), classify, ground, reports, route_eval, simulate, harness (shared plumbing)."""
