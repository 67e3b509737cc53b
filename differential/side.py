"""What every implementation offers the report (`Side`), and where its code is (`source_location`,
`child_line`): the part of the sides that the reasoning modules need, with no implementation in it.

The bundled implementations (`differential.sides`) and a user's framework
(`differential.adapter_side`) subclass `Side`; `differential.implementations.make_side` builds one.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from differential.capture import Capture
from differential.localize import ModuleResult, Origin, backward_origin, judge
from scratch_model.config import TransformerConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent


_T = TypeVar("_T")


def charged_index(params: Iterable[tuple[str, _T]], users: dict[str, tuple[str, ...]]) -> dict[str, list[_T]]:
    """For every module path, the parameters a module run alone answers for, in the order given:
    those inside it (the root, "", holds them all) and the shared ones it holds (``users``: reference
    name -> the paths of the modules that hold it). ``params``: (reference name, what to list for it).
    One pass over the parameters: teacher forcing asks for each module it runs, and a filter over
    every parameter per module is quadratic in the model's size."""
    index: dict[str, list[_T]] = {}
    for name, item in params:
        parts = name.split(".")
        for owner in {"", *(".".join(parts[:k]) for k in range(1, len(parts))), *users.get(name, ())}:
            index.setdefault(owner, []).append(item)
    return index


@functools.lru_cache(maxsize=1024)
def source_location(obj: Any) -> str:
    """"path:line" of a function or class, relative to the project when it lives inside it."""
    target = inspect.unwrap(obj)
    try:
        file = Path(inspect.getsourcefile(target) or "?").resolve()
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return "?"
    try:
        shown = file.relative_to(PROJECT_ROOT)
    except ValueError:
        shown = file
    return f"{shown}:{line}"


def child_line(container_source: str, child: str, stack: tuple[tuple[str, int], ...] = ()) -> str:
    """Point at the line in a container's source that calls ``child`` (e.g. ``self.ln1(``).

    ``stack`` is the child's recorded call stack (`Call.stack`): the frame that lies inside the
    container's function is the line that ran, which matters when the container's code branches
    (a pre-LN and a post-LN path both call ``ln1``). Without one, the first line naming the child."""
    file, _, line = container_source.rpartition(":")
    if not file or not line.isdigit():
        return container_source
    path = PROJECT_ROOT / file
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return container_source
    start = int(line) - 1
    if start >= len(lines):
        return container_source
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = len(lines)
    for i in range(start + 1, len(lines)):
        text = lines[i]
        if text.strip() and len(text) - len(text.lstrip()) <= indent:
            end = i
            break
    # the container's own frame is the outermost of the first run of frames inside its function
    # (frames of functions nested in it come first, innermost first)
    resolved = path.resolve()
    ran = None
    for frame_file, frame_line in stack:
        if start < frame_line <= end and Path(frame_file).resolve() == resolved:
            ran = frame_line
        elif ran is not None:
            break
    if ran is not None:
        return f"{file}:{ran}"
    pattern = re.compile(rf"\b{re.escape(child)}\b")
    for i in range(start + 1, end):
        if pattern.search(lines[i]):
            return f"{file}:{i + 1}"
    return container_source


class Side:
    """One implementation (``impl`` in class | functional | torch) in one dtype."""

    impl: str
    dtype: str
    config: TransformerConfig
    most_backward_calls: int = 1  # the most times one node's backward ran in one pass of run_module
    # parameters held by several modules (a head tied to the embedding): name -> the holders' paths
    users: dict[str, tuple[str, ...]] = {}

    @property
    def shown_as(self) -> str:
        """The implementation as its user knows it, for every text that names it ("the torch
        implementation raised ...")."""
        return f"the {self.impl} implementation"

    def capture(self, tokens: np.ndarray, targets: np.ndarray) -> Capture:
        raise NotImplementedError

    def run_module(self, path: str, inputs: list[np.ndarray], tokens: np.ndarray,
                   grad_output: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray | None],
                                                            dict[str, np.ndarray | None]]:
        """Run the module at ``path`` alone on ``inputs`` (tokens where it takes tokens), then
        backward ``grad_output`` (None: forward only): (output, input grads, the gradients of the
        parameters inside the module, by reference name)."""
        raise NotImplementedError

    def loss_on(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray | None, bool]:
        """This implementation's loss alone, on the given logits (the reference's: teacher forcing),
        then its backward: (loss, d loss / d logits or None, whether the loss requires grad)."""
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def source(self, path: str) -> str:
        raise NotImplementedError

    def optimizer_step(self, grads: dict[str, np.ndarray | None], optimizer: str, lr: float,
                       current: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """One step of a fresh optimizer from the current weights with the given gradients (None:
        no gradient); returns the new weights and restores the old ones. ``current`` (optional): the
        current weights, when the caller holds them already; a side may restore from them."""
        raise NotImplementedError

    def train_steps(self, batches: list[tuple[np.ndarray, np.ndarray]], optimizer: str, lr: float
                    ) -> tuple[list[float], list[dict[str, np.ndarray]]]:
        """One optimizer step per batch: (loss before each step, parameters after each step)."""
        raise NotImplementedError

    # What the report asks of every side; a side that shows less (a user's framework) overrides them.
    def shared_weights(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The weights the reference must copy: the seeded ``arrays`` this side was built from, or
        the side's own where it keeps them (a user's model that draws its own initial weights)."""
        return arrays

    def judge(self, actual: Capture, expected: Capture, noise: Capture | None
              ) -> tuple[Capture, dict[str, ModuleResult]]:
        """`localize.judge` of this side's capture against the reference's: (the reference capture
        as compared, the results by module)."""
        return expected, judge(actual, expected, noise)

    def backward_origin(self, results: dict[str, ModuleResult], expected: Capture, actual: Capture
                        ) -> Origin | None:
        """Where the joint backward first diverges."""
        return backward_origin(results, expected, actual)

    def can_optimize(self, kind: str) -> bool:
        """Whether this implementation has the optimizer ``kind`` (adam | sgd)."""
        return True

    # Detail an implementation may offer about its own code (None: it cannot tell).
    def creation_site(self, tokens: np.ndarray, path: str, slot: int | str) -> str | None:
        """Where the tensor in ``slot`` (an input index, or "output") of the module call ``path`` was
        created: "function at file:line"."""
        return None

    def first_raw_tensor(self, tokens: np.ndarray, targets: np.ndarray, path: str | None,
                         inputs: list[np.ndarray]) -> str | None:
        """The first tensor made outside the framework's ops (from raw data) while running module
        ``path`` alone on ``inputs``, or the loss when ``path`` is None: "function at file:line"."""
        return None

    def op_check(self, path: str, inputs: list[np.ndarray]) -> dict[str, str] | None:
        """Run module ``path`` alone in float64 on ``inputs`` (its other arguments as its first call had
        them) and check each op's backward against finite differences: the first op that disagrees
        ({op, source, input, relative_error})."""
        return None

    def summary(self) -> dict[str, Any] | None:
        """Anything the report should say about how this side was reached (None: nothing)."""
        return None

    # where a finding about the code around the model points ("file:line")
    def loss_source(self) -> str:
        """Where this implementation computes its loss."""
        raise NotImplementedError

    def optimizer_source(self) -> str:
        """Where this implementation's optimizer step is."""
        raise NotImplementedError

    def backward_source(self) -> str:
        """Where this implementation's engine walks the graph backward ("" where it is not ours to show)."""
        return ""


