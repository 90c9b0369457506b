"""The GPT-2 paper's zero-shot evaluations, detokenisers, metrics and sampling (issue 8)."""
