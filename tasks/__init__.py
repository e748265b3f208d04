"""Prefect tasks: thin wrappers over geodistil functions, one unit of work each."""
