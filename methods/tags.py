"""The tag vocabulary lives in harness/tags.py (the leaderboard reads it too); methods import it here."""

from harness.tags import VOCABULARY, Tags  # noqa: F401
