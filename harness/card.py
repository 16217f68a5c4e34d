"""What every registered pruning or KV-cache component states about itself (its card): name, code
version, paper, reference implementation, how it departs from it, the paper's tags. Records,
tables and the leaderboard read a card through `describe()`; methods (methods.base.Method) and KV
policies (harness.kv.policy.KVPolicy) share it so the two registries describe themselves alike."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from harness.tags import Tags


class Card:
    name: ClassVar[str]
    version: ClassVar[str]
    paper: ClassVar[str]
    reference: ClassVar[str] = ""        # URL of the reference implementation
    # "reference": built against a reference implementation; "reconstructed": from the paper's
    # text alone (no code public), every open choice named in `differences`
    fidelity: ClassVar[str] = "reference"
    differences: ClassVar[str] = ""      # how this implementation departs from the reference
    tags: ClassVar[Tags]                 # the paper's tags, as the Awesome-LLMs-Pruning list badges them
    listed: ClassVar[str] = ""           # the paper's link as that list gives it ("" = not on the list)

    def paper_entry(self, pattern: str | None = None) -> tuple[str, Tags]:
        """(list link, paper tags) of the paper these parameters implement on this target pattern;
        a method covering several papers (depth: one per metric) overrides it."""
        return self.listed, self.tags

    def papers(self) -> list[str]:
        """Every list link this code implements (a method covering several papers overrides it)."""
        return [self.listed] if self.listed else []

    def params(self) -> dict:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def describe(self) -> dict:
        listed, tags = self.paper_entry()
        return {"name": self.name, "version": self.version, "params": self.params(),
                "tags": tags.as_dict(), "listed": listed, "paper": self.paper, "reference": self.reference,
                "differences": self.differences, "fidelity": self.fidelity}
