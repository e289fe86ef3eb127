"""Vector stores (FAISS, Qdrant), ingestion, collections and two-stage search."""
