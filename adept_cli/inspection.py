"""What a trained soft prompt holds (`adept inspect`): each prompt vector's norm and its nearest vocabulary
tokens (by cosine similarity and by Euclidean distance, with both numbers), how far the prompt moved from
where it started, and the offsets: for token-wise methods (ADePT) the tokens whose offsets are largest
and each token's offset norm against its embedding's norm; for position-wise ones (DePT) the offset
norm at each position. Reading a prompt back as words is only an approximation (a trained vector often
lies far from every token); the distances say how close each reading is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import AdeptError
from .prompt.adapter import text_prompt_ids

CHUNK = 8192  # vocabulary rows per pass when every token's offset is computed


@torch.no_grad()
def inspect_prompt(model: Any, tokenizer: Any, top_k: int = 5) -> dict[str, Any]:
    """The inspection of a `PromptTunedModel`'s adapter, as plain numbers and strings (JSON-ready)."""
    if top_k < 1:
        raise AdeptError(f"--top-k must be at least 1; got {top_k}")
    adapter = model.adapter
    table = model.adapted_embedding.embedding.weight.detach().float()
    table_norms = table.norm(dim=1)
    prompt = adapter.prompt_rows().detach().float()
    unit_prompt = torch.nn.functional.normalize(prompt, dim=1)
    k = min(top_k, table.shape[0])
    nearest_cosine = (unit_prompt @ (table / table_norms.clamp_min(1e-12).unsqueeze(1)).T).topk(k, dim=1)
    euclid_ids, euclid_distances = _nearest_by_distance(prompt, table, k)
    vectors = []
    for slot in range(prompt.shape[0]):
        by_cosine = zip(nearest_cosine.indices[slot].tolist(), nearest_cosine.values[slot].tolist())
        by_distance = zip(euclid_ids[slot].tolist(), euclid_distances[slot].tolist())
        vectors.append(
            {
                "slot": slot,
                "norm": float(prompt[slot].norm()),
                "nearest_cosine": [_token(tokenizer, i, cosine=v) for i, v in by_cosine],
                "nearest_euclidean": [_token(tokenizer, i, distance=v) for i, v in by_distance],
            }
        )
    return {
        "method": adapter.config.method,
        "prompt_len": prompt.shape[0],
        "dim": prompt.shape[1],
        "vocab_size": table.shape[0],
        "embedding_norm_median": float(table_norms.median()),
        "vectors": vectors,
        "prompt_similarity": (unit_prompt @ unit_prompt.T).tolist(),
        "moved": _moved(adapter, prompt, table, tokenizer),
        "offsets": _offsets(adapter, table, table_norms, tokenizer, k),
    }


def _nearest_by_distance(prompt: torch.Tensor, table: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of `table` to each prompt vector by Euclidean distance. `cdist`'s fast form loses
    about 1e-3 to cancellation, so its 4k best candidates are measured again, exactly, and the best k kept."""
    candidates = torch.cdist(prompt, table).topk(min(4 * k, table.shape[0]), dim=1, largest=False).indices
    exact = (prompt.unsqueeze(1) - table[candidates]).norm(dim=2)
    best = exact.topk(k, dim=1, largest=False)
    return candidates.gather(1, best.indices), best.values


def _token(tokenizer: Any, index: int, **numbers: float) -> dict[str, Any]:
    return {
        "id": index,
        "token": tokenizer.convert_ids_to_tokens(index),
        **{k: round(v, 6) for k, v in numbers.items()},
    }


def _moved(adapter: Any, prompt: torch.Tensor, table: torch.Tensor, tokenizer: Any) -> dict[str, Any]:
    """How far each vector is from its starting value, where that start can be known again: a prompt
    initialised from a text starts at that text's token embeddings. (Sampled or random starts are not
    recorded: the start cannot be told.)"""
    config = adapter.config
    if getattr(config, "prompt_init", None) != "text" or not getattr(config, "prompt_init_text", None):
        return {
            "known": False,
            "why": f"its start ({getattr(config, 'prompt_init', 'unknown')} values) is not recorded",
        }
    start = table[torch.tensor(text_prompt_ids(tokenizer, config.prompt_init_text, prompt.shape[0]))]
    change = (prompt - start).norm(dim=1)
    return {
        "known": True,
        "start": f"the text {config.prompt_init_text!r}",
        "distance": change.tolist(),
        "relative": (change / start.norm(dim=1).clamp_min(1e-12)).tolist(),
    }


def _offsets(
    adapter: Any, table: torch.Tensor, table_norms: torch.Tensor, tokenizer: Any, k: int
) -> dict[str, Any] | None:
    method = adapter.method
    if method.offsets_follow is None:
        return None
    if method.offsets_follow == "positions":
        count = method.position_count(adapter)
        positions = torch.arange(count).unsqueeze(0)
        zeros = torch.zeros((1, count, table.shape[1]))
        norms = adapter.offsets(torch.zeros_like(positions), zeros, positions)[0].float().norm(dim=1)
        return {"kind": "position", "norm_per_position": norms.tolist(), "largest_position": int(norms.argmax())}
    norms = torch.cat(
        [
            adapter.offsets(torch.arange(start, min(start + CHUNK, table.shape[0])).unsqueeze(0),
                            table[start : start + CHUNK].unsqueeze(0), None)[0].float().norm(dim=1)
            for start in range(0, table.shape[0], CHUNK)
        ]
    )  # fmt: skip
    ratio = norms / table_norms.clamp_min(1e-12)
    largest = norms.topk(k)
    return {
        "kind": "token",
        "largest": [
            _token(tokenizer, i, norm=v, ratio=float(ratio[i]))
            for i, v in zip(largest.indices.tolist(), largest.values.tolist())
        ],
        "ratio_median": float(ratio.median()),
        "ratio_max": float(ratio.max()),
        "norm_median": float(norms.median()),
    }


def plot_inspection(report: dict[str, Any], path: Path) -> Path:
    """A PNG: the prompt vectors' cosine similarities (heatmap) and the offsets' norms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = report["offsets"]
    figure, axes = plt.subplots(1, 2 if offsets else 1, figsize=(11 if offsets else 5.5, 4.5), squeeze=False)
    heat = axes[0][0].imshow(report["prompt_similarity"], cmap="viridis", vmin=-1, vmax=1)
    axes[0][0].set_title("cosine similarity of the prompt vectors")
    axes[0][0].set_xlabel("slot")
    axes[0][0].set_ylabel("slot")
    figure.colorbar(heat, ax=axes[0][0])
    if offsets and offsets["kind"] == "position":
        axes[0][1].plot(offsets["norm_per_position"])
        axes[0][1].set_title("offset norm per position (DePT)")
        axes[0][1].set_xlabel("position")
    elif offsets:
        tokens = [entry["token"] for entry in offsets["largest"]]
        axes[0][1].barh(tokens[::-1], [entry["norm"] for entry in offsets["largest"]][::-1])
        axes[0][1].set_title("largest token offsets (norm)")
    figure.suptitle(f"{report['method']}: {report['prompt_len']} prompt vectors of width {report['dim']}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
