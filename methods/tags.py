"""The tag vocabulary lives in harness/tags.py (the leaderboard and the record read it too);
methods import it from here."""

from harness.tags import (AXES, BOARD_ONLY, LIST_KEYS, LIST_VOCABULARY, RECOVERY_RETRAIN,  # noqa: F401
                          VOCABULARY, Tags, run_tags)
