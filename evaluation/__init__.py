"""Evaluation runners: MTEB, BEIR-format, MMEB-style; metrics and reports."""
