"""Proposers: where candidates come from (the offline searcher, the Claude agent)."""
