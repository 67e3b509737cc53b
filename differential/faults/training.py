"""Faulty loss, data and autograd-engine code."""

from __future__ import annotations

import numpy as np

from scratch_model import autograd as ag
from scratch_model.autograd import Tensor
from scratch_model.autograd.tensor import op


def cross_entropy_sum(logits, targets):
    b, t, v = logits.shape
    log_probs = ag.log_softmax(ag.reshape(logits, (b * t, v)), axis=-1)
    return -log_probs[np.arange(b * t), np.asarray(targets).reshape(-1)].sum()  # FAULT: sum, not mean


def cross_entropy_from_data(logits, targets):
    b, t, v = logits.shape
    log_probs = ag.log_softmax(ag.reshape(logits, (b * t, v)), axis=-1)
    picked = log_probs.data[np.arange(b * t), np.asarray(targets).reshape(-1)]
    return Tensor(-np.sum(picked) / (b * t))  # FAULT: loss built from raw data: nothing to backpropagate


def targets_not_reversed(inputs):
    return np.ascontiguousarray(inputs)  # FAULT: the target is the input itself, not its reversal


def recursive_backward(self, grad=None):
    """A backward that recurses once per path instead of walking a topological order: right
    gradients, exponential time in the number of shared subgraphs."""
    if grad is None:
        grad = np.ones_like(self.data)

    def visit(node, g):
        node.grad = g if node.grad is None else node.grad + g
        if node._backward is None:
            return
        for parent, pg in zip(node._parents, node._backward(g), strict=True):
            if pg is not None and parent.requires_grad:
                visit(parent, pg)  # FAULT: re-walks every shared subgraph once per path

    visit(self, np.asarray(grad, dtype=self.dtype))


def make_data_off_by_one(config, num_train=6000, num_test=1000, seed=0):
    from scratch_model.data import ReversalData

    rng = np.random.default_rng(seed)
    shape = (num_train + num_test, config.seq_len)
    draw = rng.integers(1, config.vocab_size + 1, size=shape)  # FAULT: one past the last token
    return ReversalData(draw[:num_train], draw[num_train:], seed)


@op
def _fused_mean_nll(logits, targets):
    """Mean negative log-likelihood of integer ``targets`` under ``logits`` (N, V), fused."""
    n = logits.shape[0]
    shifted = logits.data - logits.data.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    loss = -log_probs[np.arange(n), targets].mean()

    def backward(g):
        grad = np.exp(log_probs)
        grad[np.arange(n), targets] -= 1.0
        return (g * grad,)  # FAULT: the mean's 1/N is missing from the backward

    return np.asarray(loss, dtype=logits.dtype), backward


def cross_entropy_fused_backward_no_mean(logits, targets):
    b, t, v = logits.shape
    return _fused_mean_nll(ag.reshape(logits, (b * t, v)), np.asarray(targets).reshape(-1))
