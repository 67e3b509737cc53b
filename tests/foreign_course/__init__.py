"""A third implementation for the adapter tests, "coursegrad": a from-scratch framework built the
way a course builds one, with the habits that make real code hard to compare.

- `engine`: a micrograd-style `Tensor` over numpy arrays (``.data``, ``.grad``, ``_prev``,
  ``_backward``), a recursive topological sort, every op written from a handful of primitives;
  it prints a banner when imported.
- `nn`: layers called through ``__call__`` only, parameters in plain lists (``Linear.params``,
  ``LayerNorm.params``), sub-layers in plain lists (``qkv``, ``ffwd.layers`` with a ``ReLU`` object
  between the two Linears), token ids taken as a float tensor, a positional layer that returns its
  ``(T, D)`` table for the model to add, the head applied after ``x.reshape(B*T, D)`` so the model
  returns ``(B*T, vocab)`` logits, a loss built from primitives, and one optimizer (SGD with
  momentum). Building the model prints its parameter count.
- `adapter`: the `differential.adapter.Adapter`, written from docs/adapter.md alone.
- `faults`: bugs of the kinds such code has, injected one at a time.

Nothing here imports `scratch_model` or tinyflow (`tests/foreign`).
"""
