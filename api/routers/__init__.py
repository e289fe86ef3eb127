"""One router per resource: embeddings, rerank, collections, health, the search page."""
