"""Retrieval: embeddings, the in-process vector index and term postings, hybrid search."""
