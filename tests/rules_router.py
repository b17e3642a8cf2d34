"""The router with its classifier forbidden, for test tables of turns the rules must decide alone."""

from __future__ import annotations

from functools import partial

from agents.routing.semantic import route_semantic


def never_consulted():
    raise AssertionError("the classifier was consulted for a turn the rules decide")


RULES_ONLY = partial(route_semantic, classifier=never_consulted)
"""``route_semantic`` that fails the test if it asks the classifier."""
