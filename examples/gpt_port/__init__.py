"""The worked example of docs/reference.md: a user's small GPT in torch (`torch_model`), its
from-scratch port (`port`), and the adapter that lets `scratchdiff report --reference` compare
them in the torch model's own names (`adapter`)."""
