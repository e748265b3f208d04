import os

# keep Prefect's state for the tests in a throwaway home, never the user's
os.environ.setdefault("PREFECT_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "geodistil-test-prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
