"""The Claude research agent: proposes each wave of experiments through the Anthropic API.

`claude.ClaudeProposer` implements the `Proposer` protocol; `usage.dollars_spent` and
`usage.usage_totals` read the campaign's API ledger for the dollar budget and the report. Nothing
is imported here, so reading the ledger (every budget check) does not load the Anthropic SDK.
"""
