"""Rerankers: the Qwen3-VL cross-encoder, the text Qwen3-Reranker, and a CrossEncoder adapter."""
