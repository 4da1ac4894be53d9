"""Installed as `hydra_plugins.bnexp_packing` (pyproject's package-dir): Hydra instantiates
sweepers only from its `hydra_plugins` namespace. The grouping is `bnexp.packing`'s."""
from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from bnexp.packing import pack_batch


class PackingSweeper(BasicSweeper):
    """Hydra's basic sweeper, each job batch with its packs rewritten into single jobs."""

    def split_arguments(self, overrides: List[Any], max_batch_size: Optional[int]
                        ) -> List[List[List[str]]]:
        batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        return [pack_batch(self.config, batch) for batch in batches]
