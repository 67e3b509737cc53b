"""A second, independently written mini framework ("tinyflow") and its adapter, for the adapter tests.

It is deliberately unlike `scratch_model`: a `Value` with ``.val``/``.g`` instead of a Tensor with
``.data``/``.grad``, ops as differently named methods (``plus``, ``times``, ``dot``, ``swap``) and a few
fused functions with hand-written backwards (``affine``, ``layer_norm``, ``cross_entropy``), a
recursive backward, parameters kept in plain lists (``layer.params``), Linear weights stored
``(in, out)``, and its own layer names (``tok_emb``, ``layers[i].mha.wq``, ``norm_a``, ``mlp.up``,
``out``). Nothing here imports `scratch_model`: it is a stand-in for a user's own code.

- `engine`: the Value and its ops.
- `nets`: the layers, the reversal transformer and two optimizers.
- `adapter`: the `differential.adapter.Adapter` that maps it onto the torch reference.
"""
