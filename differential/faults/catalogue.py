"""The catalogue: every fault with its description, bug class, where it lives and what the report
must say about it. Bug classes are numbered as in shared/BUG_CLASSES.md."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    bug_class: int  # 1..10, as in BUG_CLASSES.md
    impl: str  # the implementation it breaks: class | functional | both
    targets: tuple[tuple[str, str, str], ...]  # (owner "module" or "module:Class", attribute, replacement)
    module: str  # where the report must localize it
    phase: str  # forward | backward | param_grad | optimizer | training
    kind: str
    report: dict[str, Any] = field(default_factory=dict)  # ReportOptions needed to see it
    also: tuple[tuple[str, str, str], ...] = ()  # further findings it causes: (module, phase, kind)
    # The architectures it lives in: {config field: allowed values} (a mask fault needs a causal
    # model, a positional-table fault a learned table). Where the base model lacks one, the zoo
    # switches the first allowed value on.
    needs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # Where the report must localize it in other architectures: ({field: value, ...}, (module,
    # phase, kind), also), the first whose fields all match wins; none: `module`, `phase`, `kind`.
    elsewhere: tuple[tuple[dict[str, Any], tuple[str, str, str], tuple[tuple[str, str, str], ...]], ...] = ()

    def expected(self, model: Any = None) -> list[tuple[str, str, str]]:
        """Every finding the report must list for this fault in architecture ``model`` (None: the
        seed model), the first divergence first."""
        for condition, first, also in self.elsewhere if model is not None else ():
            if all(getattr(model, name) == value for name, value in condition.items()):
                return [first, *also]
        return [(self.module, self.phase, self.kind), *self.also]

    def lives_in(self, model: Any) -> bool:
        """Whether the faulty code runs in architecture ``model``."""
        return all(getattr(model, name) in allowed for name, allowed in self.needs.items())

    def model_for(self, model: Any) -> Any:
        """``model`` with what this fault needs switched on (the first allowed value of each need
        that ``model`` lacks)."""
        from dataclasses import replace

        return replace(model, **{name: allowed[0] for name, allowed in self.needs.items()
                                 if getattr(model, name) not in allowed})

    def options_for(self, options: Any) -> Any:
        """Report options (`differential.options.ReportOptions`) under which this fault shows: its
        architecture needs switched on, plus the options it needs (an optimizer, training steps).
        Raises InputError when the fault lives in another implementation than ``options.impl``."""
        from dataclasses import replace

        from differential.errors import InputError

        if not self.applies_to(options.impl):
            raise InputError(f"fault {self.name!r} lives in the {self.impl} implementation; add --impl {self.impl}")
        return replace(options, model=self.model_for(options.model), **self.report)

    def patches(self) -> list[tuple[Any, str, Callable]]:
        return [(_resolve(owner), attr, _resolve(replacement)) for owner, attr, replacement in self.targets]

    def applies_to(self, impl: str) -> bool:
        return self.impl in ("both", impl)


def _resolve(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


L = "scratch_model.layers:"
F = "scratch_model.functional"
CM = "differential.faults.class_model:"
FM = "differential.faults.functional_model:"
OPS = "differential.faults.ops:"
TR = "differential.faults.training:"


def _fault(name: str, description: str, bug_class: int, impl: str, targets: list[tuple[str, str, str]],
           module: str, phase: str, kind: str, also: tuple[tuple[str, str, str], ...] = (),
           needs: dict[str, tuple[Any, ...]] | None = None, elsewhere: tuple = (), **report: Any) -> Fault:
    return Fault(name, description, bug_class, impl, tuple(targets), module, phase, kind, report, also,
                 needs or {}, elsewhere)


LEARNED = {"positional": ("learned",)}
POSITIONS = {"positional": ("learned", "sinusoidal")}
CAUSAL = {"mask": ("causal",)}
PRE_LN = {"norm": ("pre",)}
# With a final LayerNorm, a LayerNorm fault is first seen there: the backward reaches ln_f first.
AT_LN_F = (({"final_norm": True}, ("ln_f", "backward", "value_mismatch"), ()),)


_ALL = [
    # 1. graph breaks through raw data
    _fault("residual_from_data", "the residual add x + attn(x) is rebuilt as Tensor(x.data + y.data)", 1, "class",
           [(L + "TransformerBlock", "forward", CM + "block_residual_from_data")],
           "blocks.0", "backward", "graph_break"),
    _fault("positional_slice_from_data", "the positional table slice is taken from .data, cutting the table off",
           1, "class", [(L + "PositionalEmbedding", "forward", CM + "positional_slice_from_data")],
           "pos_embedding", "param_grad", "graph_break", needs=LEARNED),
    _fault("head_reshape_from_data", "the (B, T, D) -> (B*T, D) reshape before the output projection goes "
           "through raw data", 1, "class",
           [(L + "ReversalTransformer", "forward", CM + "model_head_reshape_from_data")],
           "(model)", "backward", "graph_break"),
    _fault("value_from_data", "attention rebuilds the value projection from .data", 1, "class",
           [(L + "MultiHeadAttention", "forward", CM + "attention_value_from_data")],
           "blocks.0.attn", "backward", "graph_break"),
    _fault("attention_mostly_outside_graph", "attention's output is rebuilt from raw data, plus a tiny proxy of its "
           "input that keeps a gradient flowing", 1, "class",
           [(L + "MultiHeadAttention", "forward", CM + "attention_mostly_outside_graph")],
           "blocks.0.attn", "backward", "mostly_detached"),
    _fault("loss_from_data", "the loss is computed from log_probs.data with np.sum: nothing to backpropagate",
           1, "both", [("scratch_model.train", "cross_entropy", TR + "cross_entropy_from_data")],
           "(loss)", "training", "graph_break"),
    # 2. ops without a backward
    _fault("reshape_no_backward", "reshape returns a new leaf with no link to its input", 2, "both",
           [("scratch_model.autograd", "reshape", OPS + "reshape_without_backward")],
           "(loss)", "training", "graph_break"),
    _fault("transpose_drops_grad", "transpose returns a result that does not require grad", 2, "class",
           [("scratch_model.autograd", "transpose", OPS + "transpose_without_backward")],
           "head", "param_grad", "graph_break",
           # a tied head has no weight of its own: the first cut parameter is the next Linear's
           elsewhere=(({"tie_head": True}, ("blocks.0.ffn.fc2", "param_grad", "graph_break"), ()),)),
    _fault("softmax_no_backward", "softmax's backward returns no gradient", 2, "class",
           [("scratch_model.autograd", "softmax", OPS + "softmax_without_backward")],
           "blocks.0.attn", "backward", "graph_break"),
    # 3. wrong backward formulas
    _fault("matmul_backward_T", "batched matmul's backward uses .T (right for 2-D, wrong for 3-D and 4-D)", 3,
           "both", [("scratch_model.autograd.linalg", "_matmul", OPS + "matmul_transpose_with_T")],
           "(model)", "backward", "exception"),
    _fault("broadcast_grad_not_summed", "elementwise backwards sum broadcast gradients over leading axes only, "
           "not over kept size-1 axes", 3, "both",
           [("scratch_model.autograd.elementwise", "unbroadcast", OPS + "unbroadcast_leading_only")],
           "blocks.0.ln2", "backward", "value_mismatch", elsewhere=AT_LN_F),
    _fault("relu_backward_no_mask", "ReLU's backward passes every gradient through", 3, "both",
           [("scratch_model.autograd", "relu", OPS + "relu_backward_passes_all")],
           "blocks.0.ffn", "backward", "value_mismatch", needs={"activation": ("relu",)}),
    _fault("sqrt_backward_no_half", "sqrt's backward forgets the factor 1/2", 3, "class",
           [("scratch_model.autograd", "sqrt", OPS + "sqrt_backward_missing_half")],
           "blocks.0.ln2", "backward", "value_mismatch", elsewhere=AT_LN_F),
    _fault("sub_backward_sign", "sub's backward gives +g to the subtrahend", 3, "both",
           [("scratch_model.autograd.elementwise", "_sub", OPS + "sub_backward_sign")],
           "blocks.0.ln2", "backward", "value_mismatch", elsewhere=AT_LN_F),
    # 4. embedding gradient
    _fault("embedding_grad_overwrite", "the embedding backward assigns, so repeated tokens overwrite each other",
           4, "class", [("scratch_model.autograd", "embedding", OPS + "embedding_assign")],
           "embedding", "param_grad", "param_grad_formula"),
    # 5. parameters that never learn
    _fault("optimizer_misses_ffn", "the hand-built parameter list given to the optimizer leaves out the FFN", 5,
           "class", [(L + "ReversalTransformer", "parameters", CM + "parameters_missing_ffn")],
           "blocks.0.ffn.fc1", "optimizer", "not_updated"),
    _fault("positional_frozen_and_unlisted", "the positional table is created without requires_grad, and the "
           "optimizer's list keeps only parameters that require grad", 5, "class",
           [(L + "PositionalEmbedding", "__init__", CM + "positional_init_frozen"),
            (L + "ReversalTransformer", "parameters", CM + "parameters_trainable_only")],
           "pos_embedding", "param_grad", "graph_break", also=(("pos_embedding", "optimizer", "not_updated"),),
           needs=LEARNED),
    _fault("layernorm_weight_frozen", "LayerNorm's gamma is created with requires_grad=False", 5, "class",
           [(L + "LayerNorm", "__init__", CM + "layer_norm_init_frozen")],
           "blocks.0.ln2", "param_grad", "graph_break",
           elsewhere=(({"final_norm": True}, ("ln_f", "param_grad", "graph_break"), ()),)),
    # 6. forward math slips
    _fault("attention_no_scale", "attention scores are not multiplied by 1/sqrt(head_dim)", 6, "class",
           [(L + "MultiHeadAttention", "forward", CM + "attention_without_scale")],
           "blocks.0.attn", "forward", "value_mismatch"),
    _fault("functional_attention_no_scale", "the functional attention forgets 1/sqrt(head_dim)", 6, "functional",
           [(F, "attention", FM + "attention_without_scale")],
           "blocks.0.attn", "forward", "value_mismatch"),
    _fault("softmax_wrong_axis", "attention softmax normalises over queries instead of keys", 6, "class",
           [(L + "MultiHeadAttention", "forward", CM + "attention_softmax_wrong_axis")],
           "blocks.0.attn", "forward", "value_mismatch"),
    _fault("heads_split_by_reshape", "heads are split with a reshape where a transpose was needed", 6, "class",
           [(L + "MultiHeadAttention", "split_heads", CM + "split_heads_by_reshape")],
           "blocks.0.attn", "forward", "value_mismatch"),
    _fault("layernorm_no_eps", "LayerNorm divides by sqrt(var) without eps", 6, "class",
           [(L + "LayerNorm", "forward", CM + "layer_norm_without_eps")],
           "blocks.0.ln1", "forward", "scale_factor"),
    _fault("layernorm_unbiased", "LayerNorm uses the unbiased variance (n - 1)", 6, "functional",
           [(F, "layer_norm", FM + "layer_norm_unbiased")],
           "blocks.0.ln1", "forward", "scale_factor"),
    _fault("positions_not_added", "the positional embedding returns its input unchanged", 6, "class",
           [(L + "PositionalEmbedding", "forward", CM + "positional_not_added")],
           "pos_embedding", "forward", "value_mismatch", needs=POSITIONS),
    _fault("positions_added_twice", "the positional table is added twice", 6, "functional",
           [(F, "add_positions", FM + "add_positions_twice")],
           "pos_embedding", "forward", "value_mismatch", needs=POSITIONS),
    # 7. mask conventions
    _fault("mask_inverted", "attention reads the boolean mask as True = blocked (the reference: True = may attend)",
           7, "class", [(L + "MultiHeadAttention", "forward", CM + "attention_mask_inverted")],
           "blocks.0.attn", "forward", "value_mismatch", needs=CAUSAL),
    _fault("causal_mask_transposed", "the causal mask is built with triu instead of tril: each query sees the "
           "future and not the past", 7, "class",
           [(L + "MultiHeadAttention", "forward", CM + "attention_causal_mask_transposed")],
           "blocks.0.attn", "forward", "value_mismatch", needs=CAUSAL),
    _fault("causal_mask_one_ahead", "the functional causal mask is off by one: query i also sees key i+1", 7,
           "functional", [(F, "allowed", FM + "allowed_one_ahead")],
           "blocks.0.attn", "forward", "value_mismatch", needs=CAUSAL),
    # architecture variants: 6. forward math slips of pre-LN blocks; 1. a tied table read through .data
    _fault("pre_ln_residual_of_normed", "a pre-LN block adds the attention's output to the normalized input "
           "instead of the residual stream", 6, "class",
           [(L + "TransformerBlock", "forward", CM + "block_pre_norm_residual_of_normed")],
           "blocks.0", "forward", "value_mismatch", needs=PRE_LN),
    _fault("pre_ln_norm_after_residual", "a pre-LN block keeps the post-LN line for its attention half: "
           "ln1(x + attn(x))", 6, "class",
           [(L + "TransformerBlock", "forward", CM + "block_pre_norm_applied_after")],
           "blocks.0", "forward", "value_mismatch", needs=PRE_LN),
    _fault("pre_ln_second_residual_from_input", "a functional pre-LN block adds the feed-forward's output to the "
           "block's input, dropping the attention's residual", 6, "functional",
           [(F, "block", FM + "block_second_residual_from_block_input")],
           "blocks.0", "forward", "value_mismatch", needs=PRE_LN),
    _fault("tied_head_grad_not_summed", "the head tied to the token embedding reads the shared table through "
           ".data: the table's gradient keeps the embedding's share only", 1, "class",
           [(L + "Linear", "forward", CM + "linear_tied_weight_from_data")],
           "head", "param_grad", "graph_break", needs={"tie_head": (True,)}),
    # 8. loss and data
    _fault("loss_sum_not_mean", "cross-entropy sums over tokens instead of averaging", 8, "both",
           [("scratch_model.train", "cross_entropy", TR + "cross_entropy_sum")],
           "(loss)", "training", "loss_mismatch"),
    _fault("loss_backward_no_mean", "a fused cross-entropy whose backward forgets the mean's 1/N: the loss value is "
           "right, its gradient N times too large", 8, "both",
           [("scratch_model.train", "cross_entropy", TR + "cross_entropy_fused_backward_no_mean")],
           "(loss)", "backward", "scale_factor"),
    _fault("targets_not_reversed", "the dataset's target is the input itself, not its reversal", 8, "both",
           [("scratch_model.data", "reverse_targets", TR + "targets_not_reversed")],
           "(data)", "training", "data_mismatch"),
    _fault("tokens_out_of_range", "the data draws tokens 1..vocab_size, one past the vocabulary", 8, "both",
           [("scratch_model.data", "make_reversal_data", TR + "make_data_off_by_one")],
           "(data)", "training", "data_mismatch"),
    # 10. slow but correct autograd
    _fault("recursive_backward", "backward recurses once per path instead of walking a topological order", 10,
           "both", [("scratch_model.autograd.tensor:Tensor", "backward", TR + "recursive_backward")],
           "(model)", "backward", "repeated_backward"),
]

FAULTS: dict[str, Fault] = {f.name: f for f in _ALL}
