"""What a prompt method is to the rest of adept: `PromptMethod`, the one interface settings, the budget
solver, the adapter modules, training, export and analysis ask instead of testing method names.

A method subclasses `PromptMethod` in a file of its own, sets the class attributes and overrides what
differs from a plain soft prompt, then is registered with one line (`methods/__init__.py`). Files here
import without torch (settings are checked and budgets solved before torch loads): the torch modules a
method builds come from `prompt/offsets.py` or from the method's `build_parts`, which runs only once
torch is in use.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..config import MethodConfig


class PromptMethod:
    """One prompt method. Every adapter holds a soft prompt (`adapter.prompt`, l x d); a method adds
    parts of its own (`build_parts`) and says how they change the input (`offsets`, `prompt_rows`)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as people write it: "ADePT"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    # The size solved from the budget when left unset (None: the method has none).
    size_field: ClassVar[str | None] = None
    # What an offset depends on: "tokens" (the same for a token wherever it stands), "positions" (moves
    # with the input), or None (no offsets). The shift probe, offset statistics and exports read it.
    offsets_follow: ClassVar[str | None] = None
    # The config fields besides prompt_len that decide the adapter's tensor shapes (an adapter can start
    # another only when they agree: `init_from`).
    shape_fields: ClassVar[tuple[str, ...]] = ()
    # The method's own training settings beyond the prompt's (fields of its config that `adept train`
    # takes as key=value; each must also be a TrainConfig field).
    settings: ClassVar[tuple[str, ...]] = ()
    # `adept export` formats (export.FORMATS) that keep the adapter's model exact.
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
