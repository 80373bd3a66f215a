"""Independent random streams per run seed: the basis of paired seeds.

Seed i gives the same initial weights, data order, timesteps and noise draws whatever the
schedule, because each comes from its own stream and no schedule consumes randomness.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Stream = Literal["init", "order", "noise", "sample", "eval"]
_STREAM_IDS: dict[Stream, int] = {"init": 0, "order": 1, "noise": 2, "sample": 3, "eval": 4}


def stream_seed(seed: int, stream: Stream) -> int:
    """A 63-bit seed for one stream of one run, derived with NumPy's SeedSequence."""
    state = np.random.SeedSequence([seed, _STREAM_IDS[stream]]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def generator(seed: int, stream: Stream) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))
