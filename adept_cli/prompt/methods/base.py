"""What a training method is to the rest of adept: `TrainingMethod`, the one interface that settings, the
budget solver, training, export, serving and analysis ask instead of testing method names, and
`PromptMethod`, the prompt methods' (PT, DePT, ADePT: a soft prompt and the parts a method adds).

A method subclasses one of them in a file of its own, declares its settings (a dataclass: names, types,
defaults, help), sets the class attributes and overrides what differs, then is registered with one call
(`methods.register_method`; the built-in ones are listed in `methods/__init__.py`). `adept train`'s
key=value settings, its help and checks, `adept budget`, `adept plan` and `adept export` read it from
the registry. Files here import without torch (settings are checked and budgets solved before torch
loads): what needs torch is imported inside the methods that use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..config import MethodConfig

EXPORT_FORMATS = ("adept", "peft", "merged", "vllm")  # adept export --format


def save_pretrained(model: Any, directory: Path, evaluation: dict[str, Any]) -> None:
    """A transformers / PEFT model's own files, with the settings evaluation needs in a file beside them."""
    from ...files import write_json_atomic
    from ..config import EVALUATION_FILE

    model.save_pretrained(directory, safe_serialization=True)
    write_json_atomic(directory / EVALUATION_FILE, evaluation)


class TrainingMethod:
    """One way to train a frozen (or not) base through adept's loop: its settings, what it trains, how its
    result is saved, loaded and served."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as people write it: "ADePT"
    # Its settings: a dataclass whose fields (with `metadata["help"]`) `adept train` takes as key=value.
    config_class: ClassVar[type] = MethodConfig
    # The settings it brings to `adept train` (fields of `config_class`); prompt methods share the
    # prompt's besides (`PROMPT_SETTINGS`).
    settings: ClassVar[tuple[str, ...]] = ()
    uses_prompt: ClassVar[bool] = False  # an adapter model with a soft prompt (`PromptTunedModel`)
    size_field: ClassVar[str | None] = None  # a size the budget solver fits (prompt methods)
    trains_base_weights: ClassVar[bool] = False  # updates the base's own weights (no quantized base)
    # The learning rate of each optimizer group: group name -> the `adept train` setting holding it.
    learning_rates: ClassVar[dict[str, str]] = {"weights": "lr"}
    # `adept export` formats (export.FORMATS) that keep the result exact, and `adept serve` engines.
    exports: ClassVar[tuple[str, ...]] = ()
    engines: ClassVar[tuple[str, ...]] = ()
    result: ClassVar[str] = ""  # what `best/` holds, in words (`adept train --help`, the run's README)

    # -- training (torch); prompt methods share theirs: `prompt.lifecycle` ----------------------------

    def build(
        self, settings: dict[str, Any], config: Any, base: Any, tokenizer: Any, source_length: int, init_prompt: bool
    ) -> Any:
        """The model that trains: `base` wrapped (or itself) with its trainable tensors. `settings`: the
        run's settings for this method (unset ones left out: `config_class` holds their defaults);
        `config`: the run's `TrainConfig`; `source_length`: its longest input."""
        raise NotImplementedError

    def trainable_groups(self, model: Any) -> dict[str, list[Any]]:
        """The trainable tensors of `build`'s model by optimizer group (the keys of `learning_rates`)."""
        return {"weights": [p for p in model.parameters() if p.requires_grad]}

    def save(self, model: Any, directory: Path, evaluation: dict[str, Any]) -> None:
        """Write the deployable result, with the settings evaluation needs."""
        raise NotImplementedError

    def restore(self, model: Any, directory: Path) -> None:
        """Load what `save` wrote into the live `model` (same method and base)."""
        raise NotImplementedError

    def load(self, directory: Path, model_name: str, dtype: Any, quantization: str | None, device: Any) -> Any:
        """A fresh model with the trained result of `directory`, for evaluation or export."""
        raise NotImplementedError

    # -- what can be done with a trained result ------------------------------------------------------

    def export_refusal(self, format: str) -> str | None:
        """Why this method's results cannot be written in `format` (None when they can)."""
        if format in self.exports:
            return None
        return (
            f"--format {format} writes prompt adapters; a {self.name} run's best/ is already its result ({self.result})"
        )


class PromptMethod(TrainingMethod):
    """One prompt method. Every adapter holds a soft prompt (`adapter.prompt`, l x d); a method adds
    parts of its own (`build_parts`) and says how they change the input (`offsets`, `prompt_rows`)."""

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    uses_prompt = True

    learning_rates: ClassVar[dict[str, str]] = {"prompt": "lr_prompt", "offsets": "lr_offsets"}
    result = "an adept prompt adapter"
    # The size solved from the budget when left unset (None: the method has none).
    size_field: ClassVar[str | None] = None
    # What an offset depends on: "tokens" (the same for a token wherever it stands), "positions" (moves
    # with the input), or None (no offsets). The shift probe, offset statistics and exports read it.
    offsets_follow: ClassVar[str | None] = None
    # The config fields besides prompt_len that decide the adapter's tensor shapes (an adapter can start
    # another only when they agree: `init_from`).
    shape_fields: ClassVar[tuple[str, ...]] = ()
    exports: ClassVar[tuple[str, ...]] = ("adept",)

    # -- settings and sizes (no torch) ---------------------------------------------------------------

    def count(self, dim: int, prompt_len: int, size: int | None, max_length: int) -> int:
        """Trainable parameters with this prompt length and size (s = `max_length` input positions)."""
        return prompt_len * dim

    def largest_size(self, dim: int, prompt_len: int, budget: int, max_length: int) -> int:
        """The largest size whose count fits `budget` (below 1: nothing fits). Sized methods only."""
        raise NotImplementedError(f"method {self.name} has no size to solve")

    def settings_for_inputs(self, settings: dict[str, Any], positions: int) -> dict[str, Any]:
        """The method settings for a model whose inputs span `positions` content positions (DePT sizes its
        position table by it); unchanged for the others."""
        return settings

    # -- the adapter's parts (torch) -----------------------------------------------------------------

    def build_parts(self, config: MethodConfig, dim: int) -> dict[str, Any]:
        """The trainable modules the adapter holds besides its prompt, by attribute name (the names
        become the adapter's state-dict keys, so they must not change between versions)."""
        return {}

    def offsets(self, adapter: Any, ids: Any, embeds: Any, positions: Any) -> Any:
        """What to add to the input embeddings `embeds` of token `ids` at content `positions` (None: nothing)."""
        return None

    def prompt_rows(self, adapter: Any) -> Any:
        """The l x d rows the model reads as the soft prompt."""
        return adapter.prompt

    def position_count(self, adapter: Any) -> int:
        """How many content positions carry an offset (methods whose offsets follow positions)."""
        return 0

    def rolled_positions(self, adapter: Any, shift: int) -> Any:
        """A context in which position i gets the offset of position (i + shift) mod s (the shift probe
        of methods whose offsets follow positions)."""
        raise NotImplementedError(f"method {self.name} has no position offsets to roll")

    def token_offset_factors(self, adapter: Any, table: Any) -> tuple[Any, Any] | None:
        """Where every vocabulary token's offset is a product of two factors, (A, B) with offset(id) =
        A[:, id] @ B.T over the (V x d) input embedding `table`: a LoRA on the embedding table computes it
        (`--format vllm`). None for methods without token offsets."""
        return None

    @property
    def engines(self) -> tuple[str, ...]:  # type: ignore[override]
        """adept's own engine serves every prompt adapter; vLLM those its export format keeps exact."""
        return ("builtin", "vllm") if "vllm" in self.exports else ("builtin",)

    def parameter_groups(self, adapter: Any) -> dict[str, list[Any]]:
        """Trainable tensors by learning-rate group: "prompt" (lr_prompt) and "offsets" (lr_offsets)."""
        others = [parameter for name, parameter in adapter.named_parameters() if name != "prompt"]
        return {"prompt": [adapter.prompt], "offsets": others}

    # -- what can be done with a trained adapter -------------------------------------------------------

    def export_refusal(self, format: str) -> str | None:
        """Why this method's adapters cannot be written in `format` (None when they can)."""
        if format in self.exports:
            return None
        usable = sorted(self.exports, key=lambda name: name == "adept")  # the native format last
        other = " or ".join(f"--format {name}" for name in usable)
        if format == "peft":
            return (
                f"a {self.name} adapter cannot be a PEFT prompt-tuning adapter: PEFT has no place for its input "
                f"offsets and would silently drop them. Use {other}"
            )
        if format == "merged" and self.offsets_follow == "positions":
            return (
                f"--format merged needs offsets that depend on the token alone; {self.name}'s offsets depend on "
                f"the position, so no embedding table can hold them. Use {other}"
            )
        if format == "merged" and self.offsets_follow is None:
            return f"--format merged folds offsets into the embedding table; {self.name} has none to merge. Use {other}"
        if format == "vllm":
            return (
                f"--format vllm gives generated tokens their offsets through a LoRA on the embedding table, the "
                f"same for a token wherever it stands; {self.name}'s offsets depend on the position, so generated "
                f"tokens would lose theirs. Serve it with adept's own engine: use {other}"
            )
        return f"a {self.name} adapter cannot be exported as {format}. Use {other}"
