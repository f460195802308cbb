"""The Claude research agent: proposes each wave of experiments through the Anthropic API.

`ClaudeProposer` implements the `Proposer` protocol; `dollars_spent` and `usage_totals` read the
campaign's API ledger for the dollar budget and the report.
"""

from autoresearch.agent.claude import ClaudeProposer
from autoresearch.agent.client import AgentSetupError, ModelNotFoundError, build_client, check_model
from autoresearch.agent.usage import dollars_spent, usage_totals

__all__ = [
    "AgentSetupError",
    "ClaudeProposer",
    "ModelNotFoundError",
    "build_client",
    "check_model",
    "dollars_spent",
    "usage_totals",
]
