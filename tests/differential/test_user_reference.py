"""The user's own torch model as the reference (`--reference`, `ReportOptions(reference=...)`):
the worked example of docs/reference.md, a GPT in torch and its from-scratch port. The clean port
matches; faults put into the port are each localized, in the torch model's names and, through the
adapter, in the port's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from differential.adapter import AdapterOptions
from differential.cli import main
from differential.report import ReportOptions, run_report
from differential.user_reference import first_tensor, load_reference, module_layout
from examples.gpt_port import port
from examples.gpt_port.adapter import PortAdapter, make_adapter
from examples.gpt_port.torch_model import TinyGPT, make_model
from scratch_model import autograd as ag
from scratch_model.autograd import Tensor

ADAPTER, REFERENCE = "examples.gpt_port.adapter:make_adapter", "examples.gpt_port.torch_model:make_model"


def report_on(dtype: str = "float64", **options):
    adapter = make_adapter(AdapterOptions(PortAdapter.config, dtype))
    return run_report(ReportOptions(adapter=adapter, reference=make_model(), model=PortAdapter.config, dtype=dtype,
                                    **options))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_clean_port_matches_its_torch_model(dtype: str) -> None:
    report = report_on(dtype=dtype)
    assert report.verdict == "match", [(d.module, d.phase, d.kind, d.hint) for d in report.findings]
    assert report.adapter["gradients"] == "modules and parameters"
    assert report.adapter["unmatched_reference_modules"] == ["h.0.mlp.gelu", "h.1.mlp.gelu"]
    names = [row["parameter"] for row in report.gradient_flow]
    assert "wte.weight" in names and "lm_head.weight" not in names  # tied: listed once, as torch does


def attention_without_mask(self, x):
    b, t, d = x.shape
    hd = d // self.heads
    qkv = self.c_attn(x)

    def heads(z):
        return ag.transpose(ag.reshape(z, (b, t, self.heads, hd)), (0, 2, 1, 3))

    q, k, v = heads(qkv[:, :, :d]), heads(qkv[:, :, d:2 * d]), heads(qkv[:, :, 2 * d:])
    att = ag.softmax((q @ ag.transpose(k, (0, 1, 3, 2))) * (1.0 / np.sqrt(hd)), axis=-1)  # FAULT: no causal mask
    return self.c_proj(ag.reshape(ag.transpose(att @ v, (0, 2, 1, 3)), (b, t, d)))


def mlp_exact_gelu(self, x):
    return self.c_proj(ag.gelu(self.c_fc(x)))  # FAULT: exact GELU where the model uses the tanh form


def block_residual_of_normed(self, x):
    h = self.ln_1(x)
    x = h + self.attn(h)  # FAULT: the residual adds the normalized input, not the stream
    return x + self.mlp(self.ln_2(x))


def head_reads_table_data(self, x):
    return x @ ag.transpose(Tensor(self.weight.data), (1, 0))  # FAULT: the tied table outside the graph


FAULTS = {  # port class, method, replacement -> (reference module, phase, the port's module)
    "no causal mask": (port.CausalSelfAttention, attention_without_mask, ("h.0.attn", "forward", "h[0].attn")),
    "exact GELU": (port.MLP, mlp_exact_gelu, ("h.0.mlp", "forward", "h[0].mlp")),
    "pre-LN residual": (port.Block, block_residual_of_normed, ("h.0", "forward", "h[0]")),
    "tied head outside the graph": (port.Linear, head_reads_table_data, ("lm_head", "param_grad", "lm_head")),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_in_the_port_is_localized_in_the_users_names(name: str, monkeypatch) -> None:
    owner, replacement, (module, phase, mine) = FAULTS[name]
    if owner is port.Linear:  # only the head: the other Linear layers keep their clean call
        clean = port.Linear.__call__
        monkeypatch.setattr(port.Linear, "__call__",
                            lambda self, x: replacement(self, x) if self.bias is None else clean(self, x))
    else:
        monkeypatch.setattr(owner, "__call__", replacement)
    report = report_on()
    first = report.first_divergence
    assert (first.module, first.phase) == (module, phase), first.hint
    assert report.adapter["modules"][module] == mine
    assert first.scratch_source.startswith("tests/differential/test_user_reference.py")


def test_the_cli_takes_the_reference_and_says_match(capsys) -> None:
    assert main(["report", "--adapter", ADAPTER, "--reference", REFERENCE, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "match"
    assert report["options"]["reference"] == "examples.gpt_port.torch_model.TinyGPT"


@pytest.mark.parametrize(("spec", "says"), [
    ("examples.gpt_port.torch_model", "expected MODULE:OBJECT"),
    ("examples.gpt_port.nothing_here:make", "cannot import"),
    ("examples.gpt_port.torch_model:missing", "has no attribute 'missing'"),
    ("examples.gpt_port.adapter:make_adapter", "expected a torch.nn.Module"),
])
def test_a_bad_reference_is_one_line_and_exit_2(spec: str, says: str, capsys) -> None:
    assert main(["report", "--adapter", ADAPTER, "--reference", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err, err


def test_the_users_module_is_never_changed() -> None:
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run_report(ReportOptions(adapter=make_adapter(), reference=model, model=PortAdapter.config, steps=2))
    assert model.training and all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert next(model.parameters()).dtype == torch.float32


def test_layout_and_outputs_of_any_module() -> None:
    params, modules = module_layout(make_model())
    assert "lm_head.weight" not in params and params["wte.weight"] == (10, 32)
    assert "h" not in modules and "h.0.attn.c_attn" in modules
    t = torch.zeros(2)
    assert first_tensor((t, 1.0)) is t and first_tensor(t) is t
    assert isinstance(load_reference(REFERENCE), torch.nn.Module)


class Probe(torch.nn.Module):
    """A module that returns nothing (a user's logging layer): nothing of it to compare."""

    def forward(self, x):
        return None


class ChattyGPT(TinyGPT):
    """The example's torch model with what real ones carry: dropout, a module returning None, and
    a forward that returns (logits, loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)
        self.probe = Probe()

    def forward(self, idx):
        logits = self.drop(super().forward(idx))
        self.probe(logits)
        return logits, None


def test_dropout_a_module_returning_none_and_a_tuple_output_are_taken_in_stride() -> None:
    torch.manual_seed(0)
    report = run_report(ReportOptions(adapter=make_adapter(), reference=ChattyGPT(), model=PortAdapter.config))
    assert report.verdict == "match", [(d.module, d.phase, d.kind, d.hint) for d in report.findings]
    assert {"drop", "h.0.mlp.gelu"} <= set(report.adapter["unmatched_reference_modules"])


class BothNamesAdapter(PortAdapter):
    """Lists the tied table under both of its names, as many frameworks' parameter walks do."""

    def named_parameters(self):
        return {f"{path}.{leaf}" if path else leaf: p for path, module in self.modules().items()
                for leaf in ("weight", "bias") if isinstance(p := getattr(module, leaf, None), Tensor)}


def test_a_tied_table_listed_under_both_names_counts_once() -> None:
    adapter = BothNamesAdapter(port.TinyGPT())
    assert "lm_head.weight" in adapter.named_parameters() and "wte.weight" in adapter.named_parameters()
    report = run_report(ReportOptions(adapter=adapter, reference=make_model(), model=PortAdapter.config))
    assert report.verdict == "match", [(d.module, d.phase, d.kind, d.hint) for d in report.findings]
