"""Everything the server keeps resident, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.models.registry import Registry
from app.serving.scoring import Scorer
from app.settings import Settings


@dataclass
class Lab:
    settings: Settings
    registry: Registry
    scorer: Scorer

    @classmethod
    def create(cls, settings: Settings, real_dir: Path | None = None) -> Lab:
        """The lab of ``settings`` (``real_dir``: where its registry finds real data, if not in the
        data dir)."""
        registry = Registry(settings, real_dir)
        scorer = Scorer(registry, settings.batching, settings.batch_max_size, settings.batch_max_wait_ms)
        return cls(settings, registry, scorer)

    def close(self) -> None:
        self.scorer.close()
