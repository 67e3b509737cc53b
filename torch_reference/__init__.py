"""The PyTorch reference: the oracle the scratch models are checked against.

- `torch_reference.model`: `ReversalTransformer`, a module tree that mirrors `scratch_model.layers`
  name for name (parameters, module paths, forward signatures).
- `torch_reference.train`: `train_torch`, the scratch training loop with torch.optim.
- `torch_reference.optim`: `TorchOptimizer`, torch's Adam and SGD update functions on a tensor list
  (the report's optimizer checks; no `torch.optim.Optimizer`, so no `torch._dynamo` import).

It imports only the plain configuration and data of `scratch_model` (never its autograd, layers,
optimizers or training loop), so it cannot share their bugs.
"""
