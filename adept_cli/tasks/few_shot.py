"""k-shot training sets: K training examples per class (balanced), or K in all for tasks without classes,
drawn from the task's train split in a seeded order. Validation and test stay as the split rule makes
them, so the draw never overlaps them."""

from __future__ import annotations

from dataclasses import replace

from .loading import TaskData, shuffled_indices
from .spec import TaskError


def draw_k_shot(data: TaskData, k: int, seed: int) -> TaskData:
    """`data` with its train split cut to the draw; `drawn` records it (indices into the full train split)."""
    task, train = data.task, data["train"]
    order = shuffled_indices(len(train), seed)
    if task.kind == "classification":
        buckets: dict[int, list[int]] = {index: [] for index in range(len(task.label_words))}
        for i in order:
            bucket = buckets.setdefault(train[i].label, [])
            if len(bucket) < k:
                bucket.append(i)
        short = {task.label_words[label]: len(rows) for label, rows in buckets.items() if len(rows) < k}
        if short:
            counts = ", ".join(f"{word!r} {count}" for word, count in short.items())
            raise TaskError(f"k_shot={k}: the train split of {task.name} has too few examples of {counts}")
        chosen = sorted(i for rows in buckets.values() for i in rows)
        per_class = {task.label_words[label]: len(rows) for label, rows in buckets.items()}
    else:
        if len(train) < k:
            raise TaskError(f"k_shot={k}: the train split of {task.name} has only {len(train)} examples")
        chosen = sorted(order[:k])
        per_class = None
    drawn = {"k_shot": k, "seed": seed, "per_class": per_class, "train_indices": chosen}
    return replace(data, splits={**data.splits, "train": [train[i] for i in chosen]}, drawn=drawn)
