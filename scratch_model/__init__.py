"""The from-scratch side: a numpy autograd and two implementations of the reversal transformer.

- `scratch_model.autograd`: Tensor, primitives, backward.
- `scratch_model.layers`: the class-based model (`ReversalTransformer`).
- `scratch_model.functional`: the functional model (`build_simple_transformer`).
- `scratch_model.train`, `scratch_model.optim`, `scratch_model.data`: training on sequence reversal.

This package never imports torch.
"""
