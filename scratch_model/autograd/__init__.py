"""A small reverse-mode autograd over numpy arrays (float32 and float64)."""

from scratch_model.autograd.activations import gelu, gelu_tanh
from scratch_model.autograd.elementwise import add, div, exp, log, mul, neg, pow, relu, sqrt, sub
from scratch_model.autograd.linalg import linear, matmul
from scratch_model.autograd.movement import concatenate, getitem, identity, reshape, swapaxes, transpose
from scratch_model.autograd.nn import cross_entropy_mean, embedding, log_softmax, softmax
from scratch_model.autograd.reduce import max, mean, sum
from scratch_model.autograd.tensor import (
    OpRecord,
    Tensor,
    as_tensor,
    is_grad_enabled,
    no_grad,
    op,
    topological_order,
)

__all__ = [
    "OpRecord", "Tensor", "add", "as_tensor", "concatenate", "cross_entropy_mean", "div", "embedding", "exp",
    "gelu", "gelu_tanh", "getitem", "identity", "is_grad_enabled", "linear", "log", "log_softmax", "matmul", "max",
    "mean", "mul", "neg", "no_grad", "op", "pow", "relu", "reshape", "softmax", "sqrt", "sub", "sum", "swapaxes",
    "topological_order", "transpose",
]
