"""Multi-task training: which task, and which of its examples, fills each slot of a global batch.

Task i is drawn with probability p_i:
- `proportional`: p_i ∝ n_i (every training example equally likely, whatever its task);
- `equal`: p_i = 1 / T;
- `temperature`: p_i ∝ n_i ** (1 / t) (t = 1 is proportional, large t tends to equal);
where n_i is the task's training examples, capped at `mix_cap` when set (as T5's examples-proportional
mixing caps large tasks). Within a task the example is drawn uniformly. Every draw of step s comes from
a generator seeded by (seed, s) alone, so a resumed run, or any split into processes and accumulation
steps, sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import torch

from ..errors import AdeptError


def mixture_weights(sizes: list[int], mix: str, temperature: float = 2.0, cap: int | None = None) -> list[float]:
    """The probability of drawing each task."""
    if not sizes or min(sizes) < 1:
        raise AdeptError(f"every task of a mixture needs training examples; sizes {sizes}")
    counted = [min(size, cap) if cap else size for size in sizes]
    if mix == "equal":
        raw = [1.0] * len(sizes)
    elif mix == "proportional":
        raw = [float(n) for n in counted]
    elif mix == "temperature":
        raw = [n ** (1.0 / temperature) for n in counted]
    else:
        raise AdeptError(f"mix must be proportional, equal or temperature; got {mix!r}")
    total = sum(raw)
    return [value / total for value in raw]


class MixtureOrder:
    """The global batch of step s over the concatenated training features of several tasks; `owners[i]`
    is the task of feature i (features of a task are contiguous)."""

    def __init__(self, owners: list[int], weights: list[float], batch_size: int, seed: int):
        self.batch_size, self.seed = batch_size, seed
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.members: list[list[int]] = [[] for _ in weights]
        for index, owner in enumerate(owners):
            self.members[owner].append(index)

    def batch(self, step: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        tasks = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=generator).tolist()
        picks = torch.rand(self.batch_size, generator=generator, dtype=torch.float64).tolist()
        return [self.members[task][int(pick * len(self.members[task]))] for task, pick in zip(tasks, picks)]
