"""Prefect flows: generation, curation and the pipeline chaining them."""
