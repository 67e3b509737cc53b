"""`AdapterSide`: a user's model, through its `Adapter`, behind the `Side` interface.

Recording patches the *classes* of the user's modules (``__call__`` and ``forward``, once per
class, dispatching by instance) and always restores them; see `differential.adapter` for the
protocol and the name map.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from differential import diagnose
from differential.adapter import OPTIMIZER_KINDS, Adapter, config_problem, rebuild, resolve_names, user_output
from differential.capture import ROOT, Call, CallLog, Capture, ModuleCrash, collector_paused, finish_calls
from differential.errors import InputError
from differential.findings import NotAvailable
from differential.localize import ModuleResult, Origin, backward_origin, judge
from differential.side import Side, charged_index, source_location
from differential.tied import holders
from scratch_model.config import TransformerConfig


def _patch_targets(objects: list[Any]) -> list[tuple[type, str]]:
    """(class, attribute) pairs to wrap: for each module's class, the classes in its MRO that
    define the ``__call__`` and ``forward`` it uses, each pair once."""
    targets: list[tuple[type, str]] = []
    for cls in dict.fromkeys(type(obj) for obj in objects):
        for attr in ("__call__", "forward"):
            owner = next((k for k in cls.__mro__ if attr in vars(k)), None)
            if owner is not None and owner is not object and inspect.isfunction(vars(owner)[attr]) \
                    and (owner, attr) not in targets:
                targets.append((owner, attr))
    return targets


@contextlib.contextmanager
def recording(modules: dict[str, Any], log: CallLog, called: dict[str, str],
              arguments: dict[str, tuple[tuple, dict]] | None = None) -> Iterator[None]:
    """Record every call of the objects in ``modules`` (path -> object) into ``log`` while the block
    runs, whether it goes through ``__call__`` or ``forward`` (which one is noted in ``called``; the
    first call's arguments in ``arguments``, to run the module alone later).

    The classes are patched, not the instances (Python looks ``__call__`` up on the class); a
    call that ``__call__`` forwards to ``forward`` is recorded once; the original attributes are
    put back even when the block raises.
    """
    paths = {id(obj): path for path, obj in modules.items()}
    running: set[int] = set()

    def wrap(original: Callable[..., Any], attr: str) -> Callable[..., Any]:
        def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            path = paths.get(id(self))
            if path is None or id(self) in running:
                return original(self, *args, **kwargs)
            running.add(id(self))
            called.setdefault(path, attr)
            if arguments is not None:
                arguments.setdefault(path, (args, kwargs))
            try:
                out = original(self, *log.before(path, args), **kwargs)
            finally:
                running.discard(id(self))
            return log.after(path, out)

        # what a look at the class sees meanwhile (functools.wraps copies more, at a cost every capture)
        recorded.__wrapped__ = original  # type: ignore[attr-defined]
        recorded.__name__, recorded.__qualname__ = original.__name__, original.__qualname__
        return recorded

    saved: list[tuple[type, str, Any]] = []
    try:
        for owner, attr in _patch_targets(list(modules.values())):
            original = vars(owner)[attr]
            saved.append((owner, attr, original))
            setattr(owner, attr, wrap(original, attr))
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


class _Reported:
    """The recorder a framework without module objects reports its calls to (`Adapter.record_forward`):
    its module paths are turned into the reference's, and unmapped ones pass through unrecorded."""

    def __init__(self, paths: dict[str, str], log: CallLog, arguments: dict[str, tuple[tuple, dict]],
                 listed: set[str] | dict[str, Any]) -> None:
        self.paths, self.log, self.arguments = paths, log, arguments  # paths: yours -> the reference's
        self.listed = listed  # every path modules() lists

    def before(self, path: str, inputs: tuple) -> tuple:
        ref = self.paths.get(path)
        inputs = tuple(inputs)
        if ref is None:
            if path not in self.listed:
                raise InputError(f"your model recorded a call of module {path!r}, which your adapter's modules() "
                                 f"does not list: list every path record_forward reports (map it to None in "
                                 f"name_map to leave it uncompared)")
            return inputs
        self.arguments.setdefault(ref, (inputs, {}))
        return self.log.before(ref, inputs)

    def after(self, path: str, output: Any) -> Any:
        ref = self.paths.get(path)
        return output if ref is None else self.log.after(ref, output)


class _Log(CallLog):
    """The call log of an adapter's model: inputs go through the adapter's identity; outputs keep their
    gradient through `Adapter.retain_grad` where the adapter has it, else through the identity too.
    Nothing here refers back to the log (a log that does is freed only by the cyclic collector, and it
    holds every tensor of the capture)."""

    def __init__(self, adapter: Adapter, alias: Callable[[Any], Any], float_input: Callable[[Any], bool]) -> None:
        kinds = adapter.tensor_type
        is_tensor = adapter.is_tensor if _overrides(adapter, "is_tensor") else lambda x: isinstance(x, kinds)
        super().__init__(is_tensor=is_tensor, alias=alias, requires_grad=adapter.requires_grad)
        self.float_dtype = float_input  # type: ignore[method-assign]
        self.retain = adapter.retain_grad if _overrides(adapter, "retain_grad") else None
        self.alias_outputs = self.retain is None  # with retain_grad, an output's gradient is read on itself

    def after(self, path: str, output: Any) -> Any:
        retain = self.retain
        if retain is not None and self._is_float(output) and self.requires_grad(output) and not retain(output):
            self.alias_outputs = True  # this output cannot keep its gradient: through the identity
            try:
                return super().after(path, output)
            finally:
                self.alias_outputs = False
        return super().after(path, output)


def _kept(array: Any, keep: set[int]) -> np.ndarray:
    """An array of a stable-array framework (`Adapter.stable_arrays`) for the capture: as it is, unless
    it is (a view of) a parameter's value or gradient (``keep``: their ids), which an optimizer under
    test may still write into, or a part of a larger array (kept alone, it would keep the whole alive),
    or not a numpy array: then a copy."""
    if type(array) is not np.ndarray:
        return np.array(array)
    root = _base(array)
    if root.base is None and id(root) not in keep and root.nbytes == array.nbytes:
        return array
    return np.array(array)


class _Dropped:
    """A float argument of a module's first call, let go of after the capture: its values only."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


# --- the side ----------------------------------------------------------------------------------

def _shown(value: Any) -> str:
    """A value a hook returned, named for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _overrides(adapter: Adapter, method: str) -> bool:
    return getattr(type(adapter), method) is not getattr(Adapter, method)


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else np.array(value)


def _base(array: np.ndarray) -> np.ndarray:
    """The array whose memory ``array`` views (itself when it owns its memory)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _quiet(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an `AdapterSide` method with whatever the user's code prints captured (stage "runs")."""
    @functools.wraps(method)
    def run(self: AdapterSide, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_quieted"):  # called from a method that captures already
            return method(self, *args, **kwargs)
        self._quieted = True
        try:
            with user_output(self.adapter).capture("runs"):
                return method(self, *args, **kwargs)
        finally:
            self._quieted = False

    return run


def _leading_reshape(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` differs from ``target`` only by how the leading axes (batch and time) are
    split: the same last axis and the same number of rows, e.g. (B*T, D) and (B, T, D)."""
    return (shape != target and len(shape) >= 1 and len(target) >= 1 and shape[-1] == target[-1]
            and int(np.prod(shape[:-1])) == int(np.prod(target[:-1])))


def _shaped(array: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if array is None or array.shape == shape or not _leading_reshape(array.shape, shape):
        return array
    return array.reshape(shape)


def _integral_extras(got: Call, ref: Call) -> list[int]:
    """The float inputs of the user's call, beyond the reference's count, that hold only whole numbers
    (token ids, one-hot rows): they stand for the reference's integer inputs."""
    surplus = len(got.inputs) - len(ref.inputs)
    if surplus <= 0:
        return []
    whole = [i for i, x in enumerate(got.inputs) if x.size and np.all(np.isfinite(x)) and np.all(x == np.round(x))]
    return whole[:surplus] if len(whole) >= surplus else []


def _without_inputs(call: Call, drop: list[int]) -> Call:
    def keep(items: list[Any]) -> list[Any]:
        return [v for i, v in enumerate(items) if i not in drop]

    return replace(call, inputs=keep(call.inputs), input_requires_grad=keep(call.input_requires_grad),
                   grad_inputs=keep(call.grad_inputs), produced_by=keep(call.produced_by))


def _table_shaped(shape: tuple[int, ...], reference: tuple[int, ...]) -> bool:
    """Whether a module's output of ``shape`` can be the table of a reference output (B, T, D): (T, D),
    or (1, T, D)."""
    return len(reference) >= 2 and shape in (reference[1:], (1,) + reference[1:])


def _reads_as_table(got: Call, ref: Call) -> bool:
    """With one sequence in the batch, (1, T, D) is also the reference's own output shape: the user's
    module is read as returning the table unless it takes a float input the size of the reference's
    (the tensor a layer that returns ``x + table`` adds to)."""
    return ref.output.shape[0] > 1 or not any(x.size == ref.inputs[0].size for x in got.inputs)


def _as_table(call: Call) -> Call | None:
    """A reference call ``x + table`` seen as the table alone (what a positional layer that returns
    its table outputs): output the table (T, D), output gradient summed over the batch; no inputs.
    None when the call is not an addition of one table to every sequence of the batch."""
    if len(call.inputs) != 1 or call.inputs[0].shape != call.output.shape or call.output.ndim < 2:
        return None
    rows = call.output - call.inputs[0]  # (B, T, D): the same table in every row
    table = rows.mean(axis=0)
    if not np.allclose(rows, table, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(rows), initial=0.0))):
        return None
    grad = None if call.grad_output is None else call.grad_output.sum(axis=0)
    return replace(call, inputs=[], input_requires_grad=[], grad_inputs=[], produced_by=[], output=table,
                   grad_output=grad)


class AdapterSide(Side):
    """A model through its adapter, in the reference's names and layouts: a user's framework, or one of
    the bundled scratch models (`differential.bundled_adapters`)."""

    def __init__(self, adapter: Adapter, config: TransformerConfig, dtype: str,
                 arrays: dict[str, np.ndarray] | None = None, reference: Any = None, impl: str = "adapter") -> None:
        """``arrays`` (reference names and layouts): load them into the user's model; None: keep its weights.
        ``reference``: the user's own torch model, whose names the adapter's name map points at.
        ``impl``: the implementation's name in the report ("adapter": a user's model, which the report
        describes in its ``adapter`` section; "class" or "functional": a bundled model, named by the
        options alone)."""
        if not isinstance(adapter, Adapter):
            raise TypeError(f"expected a differential.adapter.Adapter, got {type(adapter).__name__}")
        self.adapter, self.config, self.dtype, self.impl = adapter, config, dtype, impl
        problem = config_problem(adapter, config)
        if problem is not None:
            raise InputError(problem)
        with user_output(adapter).capture("runs"):
            self.names = resolve_names(adapter, config, reference)
            self._check_dtype({t: np.asarray(adapter.to_numpy(p)).dtype
                               for t, p in adapter.named_parameters().items()}, "parameters")
        self.users = holders(config, reference)  # shared parameters: a module run alone returns its share
        self.has_optimizer = _overrides(adapter, "make_optimizer")
        self.optimizers = tuple(adapter.optimizers)
        unknown = [k for k in self.optimizers if k not in OPTIMIZER_KINDS]
        if unknown:
            raise InputError(f"{type(adapter).__name__}.optimizers lists {unknown}: the report knows "
                             f"{', '.join(OPTIMIZER_KINDS)}")
        self.run_optimizer: str | None = None  # the optimizer the report asked for (can_optimize)
        self.tokens: np.ndarray | None = None  # the batch's token ids: float tensors equal to them are ids
        self.logits_shape: tuple[int, ...] | None = None  # the user's logits shape, where it is (B*T, V)
        # reference path -> (the user's input shapes, output shape) where they are reshaped to the reference's
        self.reshaped: dict[str, tuple[list[tuple[int, ...]], tuple[int, ...]]] = {}
        self.ref_shapes: dict[str, tuple[list[tuple[int, ...]], tuple[int, ...]]] = {}
        # reference path -> the user's output shape, for modules compared as tables (a positional layer
        # returning its table)
        self.tables: dict[str, tuple[int, ...]] = {}
        self.notes: list[str] = []
        self.ignored: dict[str, list[int]] = {}  # reference path -> float inputs that are whole numbers (ids, one-hot)
        self.full_backward = True  # module input/output gradients available; known after capture()
        self.called_through: dict[str, str] = {}  # reference path -> "__call__" | "forward"
        self.arguments: dict[str, tuple[tuple, dict]] = {}  # reference path -> the first call's (args, kwargs)
        self.found: dict[str, Any] | None = None  # the user's modules by path, as the last recorded forward found them
        self.reports_calls = _overrides(adapter, "record_forward")  # no module objects: it reports its calls
        if self.reports_calls and not _overrides(adapter, "modules"):
            raise InputError(f"{type(adapter).__name__} defines record_forward but not modules(): list your module "
                             "paths (path -> the function that implements it), or no module below the model is "
                             "compared")
        self.can_force = _overrides(adapter, "tensor") and _overrides(adapter, "backward") and \
            (not self.reports_calls or _overrides(adapter, "call_module"))
        self.keeps_own_weights = arrays is None
        if arrays is not None:
            self.load(arrays)

    def shared_weights(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.params() if self.keeps_own_weights else arrays

    def _check_dtype(self, dtypes: dict[str, np.dtype], what: str) -> None:
        wrong = {name: dt for name, dt in dtypes.items() if dt != np.dtype(self.dtype)}
        if wrong:
            name, dt = next(iter(wrong.items()))
            raise InputError(f"{type(self.adapter).__name__}'s {what} are {dt} (e.g. {name!r}) but the run asks for "
                             f"{self.dtype}: run the report with --dtype {dt} (dtype={str(dt)!r}), or build your "
                             f"model in options.dtype (your factory receives it)")

    def can_optimize(self, kind: str) -> bool:
        """Whether the optimizer and training checks can run with optimizer ``kind`` (remembered for
        the list of checks not run)."""
        self.run_optimizer = kind
        return self.has_optimizer and kind in self.optimizers

    # parameters, in the reference's names and layouts
    def _layout(self, theirs: str, array: np.ndarray | None) -> np.ndarray | None:
        return array.T if array is not None and theirs in self.names.transposed else array

    @_quiet
    def params(self) -> dict[str, np.ndarray]:
        named, to_numpy, flipped = self.adapter.named_parameters(), self.adapter.to_numpy, self.names.transposed
        return {ref: np.array(np.asarray(to_numpy(named[theirs])).T if theirs in flipped else to_numpy(named[theirs]))
                for ref, theirs in self.names.params.items()}

    @_quiet
    def load(self, arrays: dict[str, np.ndarray]) -> None:
        named = self.adapter.named_parameters()
        for ref, theirs in self.names.params.items():
            dtype = np.asarray(self.adapter.to_numpy(named[theirs])).dtype
            self.adapter.set_parameter(theirs, np.array(self._layout(theirs, np.asarray(arrays[ref])), dtype=dtype))

    def _float_input(self, x: Any) -> bool:
        """A float tensor, and not one holding exactly the batch's token ids (any leading shape): those are
        ids, not an input."""
        array = self.adapter.to_numpy(x)
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        if array.dtype.kind != "f":
            return False
        t = self.tokens
        return t is None or array.size != t.size or not np.array_equal(array.reshape(-1), t.reshape(-1))

    def _as_logits(self, array: np.ndarray | None, tokens: np.ndarray) -> np.ndarray | None:
        """The user's logits (or their gradient) as (B, T, V): a model may return them as (B*T, V)."""
        return _shaped(array, tuple(tokens.shape) + array.shape[-1:]) if array is not None else None

    @_quiet
    def capture(self, tokens: np.ndarray, targets: np.ndarray) -> Capture:
        with collector_paused():  # see there: a capture's objects would set off full collections
            return self._capture(tokens, targets)

    def _capture(self, tokens: np.ndarray, targets: np.ndarray) -> Capture:
        a = self.adapter
        self.tokens = np.asarray(tokens)
        a.zero_grad()
        aliased = True

        def alias(x: Any) -> Any:
            nonlocal aliased
            if not a.requires_grad(x):
                return x
            twin = a.identity(x)
            if twin is x:  # the gradient read on it would be the total, not what flows through one module
                raise InputError(f"{type(a).__name__}.identity() returned the tensor it was given: return a new "
                                 "node of your graph (an identity op) whose gradient the report can read, or None")
            aliased = aliased and twin is not None
            return x if twin is None else twin

        log = self._log(alias)
        try:
            logits = self._recorded_forward(tokens, log)
        except InputError:  # the adapter itself is wrong: say how
            raise
        except Exception as err:  # the code under test crashed: say where
            raise ModuleCrash(log.innermost_open(), err) from err
        out = np.array(a.to_numpy(logits))  # kept: a copy, as every array the capture keeps
        self._check_dtype({"logits": out.dtype}, "logits")
        if out.shape != tokens.shape + out.shape[-1:]:
            self.logits_shape = out.shape
            out = self._as_logits(out, tokens)
            self.notes.append(f"your logits {list(self.logits_shape)} are compared as {list(out.shape)} "
                              f"(batch and time axes reshaped)")
        try:
            loss = a.loss_and_backward(logits, targets)
        except Exception as err:
            raise ModuleCrash(None, err, phase="backward") from err
        if not log.is_tensor(loss):
            raise InputError(f"{type(a).__name__}.loss_and_backward returned {_shown(loss)}: return your loss "
                             "tensor (the report reads its value through to_numpy and whether it requires grad)")
        backward_calls = a.backward_calls() or 1
        named = a.named_parameters()
        if a.stable_arrays:  # the framework's own arrays, kept as they are where nothing can write into them
            to_numpy, grad_of = a.to_numpy, a.grad_of
            keep = {id(_base(x)) for p in named.values() for x in (to_numpy(p), grad_of(p))
                    if isinstance(x, np.ndarray)}
            calls = finish_calls(log, lambda t: _kept(a.to_numpy(t), keep),
                                 lambda t: None if (g := a.grad_of(t)) is None else _kept(g, keep))
            param_grad = lambda t: a.grad_of(named[t])  # noqa: E731 - replaced, never written: no copy
        else:
            calls = finish_calls(log, lambda t: np.array(a.to_numpy(t)), lambda t: _array(a.grad_of(t)))
            param_grad = lambda t: _array(a.grad_of(named[t]))  # noqa: E731
        # gradients on module inputs and outputs: the identity, and a framework that keeps them (seen where
        # any arrived; a loss cut from the graph runs no backward, and its cut is judged from requires_grad)
        self.full_backward = aliased and (not a.requires_grad(loss) or any(c.grad_output is not None
                                                                           for c in calls.values()))
        if not self.full_backward:  # what is there would mislead: a shared input's total gradient, say
            for c in calls.values():
                c.grad_output, c.grad_inputs = None, [None] * len(c.grad_inputs)
        logits_grad = self._as_logits(_array(a.grad_of(logits)), tokens) if self.full_backward else None
        if a.stable_arrays:
            self._let_go()
        return Capture(self.impl, self.dtype, calls, float(np.asarray(a.to_numpy(loss)).reshape(-1)[0]), out,
                       self.params(),
                       {ref: self._layout(t, param_grad(t)) for ref, t in self.names.params.items()},
                       {ref: a.requires_grad(named[t]) for ref, t in self.names.params.items()},
                       loss_requires_grad=bool(a.requires_grad(loss)), max_backward_calls=backward_calls,
                       logits_grad=logits_grad, logits_grad_known=self.full_backward)

    def _charged(self, base: str) -> list[tuple[str, str]]:
        """(reference name, yours) of the parameters a module run alone answers for (`charged_index`,
        in the order of the name map, worked out once per side)."""
        index = self.__dict__.get("_charged_names")
        if index is None:
            index = self._charged_names = charged_index(((ref, (ref, theirs)) for ref, theirs in
                                                         self.names.params.items()), self.users)
        return index.get(base, [])

    def _listed(self) -> set[str]:
        """The module paths the adapter lists (looked up once per side)."""
        listed = self.__dict__.get("_listed_paths")
        if listed is None:
            listed = self._listed_paths = set(self.adapter.modules())
        return listed

    def _log(self, alias: Callable[[Any], Any]) -> CallLog:
        return _Log(self.adapter, alias, self._float_input)

    def _recorded_forward(self, tokens: np.ndarray, log: CallLog) -> Any:
        """The user's forward with every mapped module call recorded into ``log``: reported by the
        framework itself (`Adapter.record_forward`), or seen by wrapping its module classes."""
        a = self.adapter
        if self.reports_calls:
            self.found = None  # its listing of functions, looked up again when a source is asked for
            mine = {theirs: ref for ref, theirs in self.names.modules.items()}
            return a.record_forward(tokens, _Reported(mine, log, self.arguments, self._listed()))
        found = self.found = a.modules()  # kept for this report's sources and modules run alone
        objects = {ref: found[theirs] for ref, theirs in self.names.modules.items()}
        with recording(objects, log, self.called_through, self.arguments):
            return a.forward(tokens)

    # judging what this framework can show
    def judge(self, actual: Capture, expected: Capture, noise: Capture | None
              ) -> tuple[Capture, dict[str, ModuleResult]]:
        """`localize.judge` on what the user's model shows: reference modules with no counterpart
        are left out, and without module gradients the backward phase is not checked. A user's model
        is compared in the reference's shapes where its own differ only by how they are laid out
        (`_align`, noted in the ``adapter`` section); a bundled model, built to the reference's
        shapes, is held to them exactly (and has no such section to note it in)."""
        expected = replace(expected, calls={p: c for p, c in expected.calls.items()
                                            if p.split("#")[0] in self.names.modules})
        if self.impl == "adapter":
            self._align(actual, expected, noise)
        results = judge(actual, expected, noise)
        if not self.full_backward:
            for res in results.values():
                res.backward = []
        return expected, results

    def _align(self, actual: Capture, expected: Capture, noise: Capture | None) -> None:
        """Shapes people really use, made comparable (in place): a module whose inputs or outputs are
        the reference's with the leading (batch, time) axes reshaped is compared in the reference's
        shapes; a module that returns the table the reference adds to its input (a positional layer
        returning its (T, D) table) is compared as a table on both sides. Each is noted."""
        for path, ref in list(expected.calls.items()):
            got = actual.calls.get(path)
            if got is None or got.output is None or ref.output is None or \
                    any(x is None for x in got.inputs) or any(x is None for x in ref.inputs):
                continue  # a value one side lacks is judged as it is: the comparison names it missing
            if got.output.shape == ref.output.shape and (ref.output.ndim < 2 or ref.output.shape[0] != 1) and \
                    len(got.inputs) == len(ref.inputs) and \
                    all(x.shape == e.shape for x, e in zip(got.inputs, ref.inputs, strict=True)):
                continue  # the reference's shapes (and not one sequence, which could also be a table): as it is
            shown = path or "(model)"
            table = _as_table(ref) if _table_shaped(got.output.shape, ref.output.shape) else None
            if table is not None and _reads_as_table(got, ref):
                expected.calls[path] = table
                if noise is not None and path in noise.calls:
                    noise.calls[path] = _as_table(noise.calls[path]) or noise.calls[path]
                shape = table.output.shape
                actual.calls[path] = replace(got, inputs=[], input_requires_grad=[], grad_inputs=[], produced_by=[],
                                             output=got.output.reshape(shape),
                                             grad_output=None if got.grad_output is None
                                             else got.grad_output.reshape(shape))
                self.tables[path] = got.output.shape
                self.notes.append(f"{shown} returns the table {list(table.output.shape)} that the reference adds "
                                  f"to its input: compared as a table (its gradient: the reference's summed over "
                                  f"the batch)")
                continue
            extra = _integral_extras(got, ref)
            if extra:
                got = actual.calls[path] = _without_inputs(got, extra)
                self.ignored[path] = extra
                self.notes.append(f"{shown}: float input{'s' if len(extra) > 1 else ''} "
                                  f"{', '.join(map(str, extra))} hold{'' if len(extra) > 1 else 's'} whole numbers "
                                  f"(token ids, one-hot rows) where the reference takes no float input: not compared")
            ins = [x.shape for x in got.inputs]
            ref_ins = [x.shape for x in ref.inputs]
            if len(ins) != len(ref_ins):
                continue
            if not any(_leading_reshape(a, e) for a, e in zip(ins + [got.output.shape],
                                                                ref_ins + [ref.output.shape], strict=True)):
                continue
            self.reshaped[path] = (ins, got.output.shape)
            self.ref_shapes[path] = (ref_ins, ref.output.shape)
            actual.calls[path] = replace(
                got, inputs=[_shaped(x, e) for x, e in zip(got.inputs, ref_ins, strict=True)],
                output=_shaped(got.output, ref.output.shape),
                grad_output=_shaped(got.grad_output, ref.output.shape),
                grad_inputs=[_shaped(g, e) for g, e in zip(got.grad_inputs, ref_ins, strict=False)]
                + got.grad_inputs[len(ref_ins):])
            moved = [f"{what} {list(a)} as {list(e)}" for what, a, e in
                     [(f"input[{i}]", a, e) for i, (a, e) in enumerate(zip(ins, ref_ins, strict=True))]
                     + [("output", got.output.shape, ref.output.shape)] if a != e and _leading_reshape(a, e)]
            if path != ROOT or self.logits_shape is None:  # the logits' own note already says it for the model
                self.notes.append(f"{shown}: compared after reshaping the batch and time axes: {', '.join(moved)}")

    def backward_origin(self, results: dict[str, ModuleResult], expected: Capture, actual: Capture
                        ) -> Origin | None:
        if self.full_backward:
            return backward_origin(results, expected, actual)
        return parameter_origin(results, expected)

    def unchecked(self) -> dict[str, str]:
        """Phases this adapter could not check, with the reason."""
        out = {}
        if not self.full_backward:
            out["backward"] = ("no gradients of module inputs and outputs (the adapter has no identity op, or the "
                               "framework keeps no gradients on intermediate tensors): only parameter gradients "
                               "were compared")
        if not self.has_optimizer:
            out["optimizer"] = out["training"] = "the adapter defines no make_optimizer"
        elif self.run_optimizer is not None and self.run_optimizer not in self.optimizers:
            out["optimizer"] = out["training"] = (
                f"your framework has no {self.run_optimizer} optimizer (the adapter declares optimizers = "
                f"{self.optimizers!r}): run with --optimizer {self.optimizers[0]} to check it" if self.optimizers
                else "your framework has no optimizer (the adapter declares optimizers = ())")
        if not self.can_force:
            out["findings"] = (f"the adapter defines no {self._missing_forcing_hooks()}: modules cannot run alone on "
                               "the reference's values, so only the first divergence is localized")
        elif not self.full_backward:
            out["findings"] = ("no gradients of module inputs (see backward): modules run alone could not be judged, "
                               "so only the first divergence is localized")
        return out

    @property
    def shown_as(self) -> str:
        """The implementation as its user knows it, for every text that names it ("the class
        implementation raised ..."): a bundled model by its name, a user's model by its adapter."""
        if self.impl != "adapter":
            return f"the {self.impl} implementation"
        cls = type(self.adapter)
        return f"your model (through {cls.__module__}.{cls.__qualname__})"

    def summary(self) -> dict[str, Any] | None:
        """The report's ``adapter`` section (None for a bundled model: the options name it)."""
        if self.impl != "adapter":
            return None
        cls = type(self.adapter)
        theirs = self.names.modules
        return {"adapter": f"{cls.__module__}.{cls.__qualname__}",
                "gradients": "modules and parameters" if self.full_backward else "parameters only",
                "transposed": sorted(self.names.transposed),
                "unchecked_phases": list(self.unchecked()),
                "why_unchecked": self.unchecked(),
                "unmatched_reference_modules": list(self.names.unmatched),
                "modules": dict(theirs),
                "called_through": {theirs[p]: how for p, how in self.called_through.items()},
                "optimizers": list(self.optimizers),
                "notes": list(dict.fromkeys(self.notes)),
                "printed": dict(user_output(self.adapter).stages)}

    # sources
    def source(self, path: str) -> str:
        theirs = self.names.modules.get(path.split("#")[0])
        obj = self._modules().get(theirs) if theirs is not None else None
        if isinstance(obj, functools.partial):  # a framework without module objects lists its functions
            obj = obj.func
        if inspect.isfunction(obj) or inspect.ismethod(obj):
            return source_location(obj)
        if obj is None:
            return "?"
        cls = type(obj)
        owner = next((k for k in cls.__mro__ if "forward" in vars(k) and k is not object), None)
        return source_location(cls.forward if owner is not None else cls.__call__)

    @_quiet
    def loss_source(self) -> str:
        function = self.adapter.loss_function()  # looked up when asked: a fault may have replaced it
        return source_location(function if function is not None else type(self.adapter).loss_and_backward)

    def backward_source(self) -> str:
        function = self.adapter.backward_function()
        return source_location(function if function is not None else type(self.adapter).loss_and_backward)

    def optimizer_source(self) -> str:
        kind = self.run_optimizer if self.run_optimizer in self.optimizers else (self.optimizers or ("adam",))[0]
        known = self.__dict__.setdefault("_optimizer_sources", {})  # a report asks in every stage that may name it
        if kind not in known:
            try:
                known[kind] = source_location(type(self.adapter.make_optimizer(kind, 1e-3)).step)
            except Exception:  # noqa: BLE001 - any failure: point at the factory instead
                known[kind] = source_location(type(self.adapter).make_optimizer)
        return known[kind]

    # optimizer and training
    @_quiet
    def optimizer_step(self, grads: dict[str, np.ndarray | None], optimizer: str, lr: float,
                       current: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """``current``: the weights as they are now, when the caller holds them already (a capture's
        copies): the weights are then put back from copies of those, made once the step is done,
        instead of from copies made before it (one copy of the model fewer at the step's peak)."""
        a, flipped, stable = self.adapter, self.names.transposed, self.adapter.stable_arrays
        before = self.params() if current is None else current  # copies: an optimizer may write into the values
        opt = self._optimizer(optimizer, lr)
        set_grad = a.set_grad
        for ref, theirs in self.names.params.items():
            g = grads.get(ref)
            if g is not None:
                g = np.asarray(g).T if theirs in flipped else g
                if stable:  # a framework that writes into no array it is given: read-only, not a copy
                    g = np.asarray(g, dtype=before[ref].dtype).view()
                    g.flags.writeable = False
                else:
                    g = np.array(g, dtype=before[ref].dtype)
            set_grad(theirs, g)
        opt.step()
        del opt  # its state is done with
        if not stable:
            after = self.params()
            self.load(before)  # copies
            a.zero_grad()
            return after
        # the stepped values as the optimizer left them: putting the copies back replaces them, so
        # nothing writes into them later; the copies are this call's own, handed over as they are
        named, to_numpy, set_parameter = a.named_parameters(), a.to_numpy, a.set_parameter
        after = {}
        for ref, theirs in self.names.params.items():
            value = np.asarray(to_numpy(named[theirs]))
            after[ref] = value.T if theirs in flipped else value
            old = before[ref] if current is None else np.array(before[ref])
            set_parameter(theirs, old.T if theirs in flipped else old)
        a.zero_grad()  # the step's gradients are done with: let them go now
        return after

    @_quiet
    def train_steps(self, batches: list[tuple[np.ndarray, np.ndarray]], optimizer: str, lr: float
                    ) -> tuple[list[float], list[dict[str, np.ndarray]]]:
        opt = self._optimizer(optimizer, lr)
        losses, snapshots = [], []
        for tokens, targets in batches:
            self.adapter.zero_grad()
            loss = self.adapter.loss_and_backward(self.adapter.forward(tokens), targets)
            opt.step()
            losses.append(float(np.asarray(self.adapter.to_numpy(loss)).reshape(-1)[0]))
            snapshots.append(self.params())
        return losses, snapshots

    def _optimizer(self, kind: str, lr: float) -> Any:
        if not self.has_optimizer:
            raise InputError(f"{type(self.adapter).__name__} defines no make_optimizer: the optimizer and "
                             "training checks (--steps) need it")
        if kind not in self.optimizers:
            raise InputError(f"your framework has no {kind} optimizer ({type(self.adapter).__name__}.optimizers = "
                             f"{self.optimizers!r}): run with --optimizer "
                             f"{self.optimizers[0] if self.optimizers else '...'} or without --steps")
        made = self.adapter.make_optimizer(kind, lr)
        # where its step is, for `optimizer_source` (which need not build another optimizer then)
        self.__dict__.setdefault("_optimizer_sources", {}).setdefault(kind, source_location(type(made).step))
        return made

    # teacher forcing
    def _forcing(self) -> None:
        if not self.can_force:
            raise NotAvailable(f"{type(self.adapter).__name__} defines no {self._missing_forcing_hooks()}: modules "
                               "and the loss cannot run alone on the reference's values (teacher forcing)")
        if not self.full_backward:
            raise NotAvailable(f"{type(self.adapter).__name__} keeps no gradients on module inputs: modules and the "
                               "loss cannot be run alone and judged (teacher forcing)")

    def _missing_forcing_hooks(self) -> str:
        a = self.adapter
        has_tensor, has_backward = _overrides(a, "tensor"), _overrides(a, "backward")
        if has_tensor and has_backward:
            return "call_module() (it reports its own module calls, so there is no module object to call)"
        if has_tensor or has_backward:
            has, lacks = ("tensor()", "backward()") if has_tensor else ("backward()", "tensor()")
            return f"{lacks} (it defines {has})"
        return "tensor() and backward()"

    def _tensor(self, array: np.ndarray) -> Any:
        return self.adapter.tensor(np.array(array, dtype=self.dtype))

    @_quiet
    def loss_on(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray | None, bool]:
        self._forcing()
        a = self.adapter
        given = self._tensor(logits if self.logits_shape is None else logits.reshape(self.logits_shape))
        a.zero_grad()
        loss = a.loss_and_backward(given, targets)
        grad = _array(a.grad_of(given))
        return (float(np.asarray(a.to_numpy(loss)).reshape(-1)[0]), self._as_logits(grad, targets),
                a.requires_grad(loss))

    @_quiet
    def run_module(self, path: str, inputs: list[np.ndarray], tokens: np.ndarray, grad_output: np.ndarray | None
                   ) -> tuple[np.ndarray, list[np.ndarray | None], dict[str, np.ndarray | None]]:
        """The user's module called as the model called it (same non-float arguments), with each float
        input replaced by a new tensor holding the reference's value."""
        self._forcing()
        a = self.adapter
        base = path.split("#")[0]
        mine = self.reshaped.get(path)
        if mine is not None:  # the user's module works on (batch*time, ...) where the reference has (batch, time, ...)
            grad_output = _shaped(grad_output, mine[1])
        table = self.tables.get(path)
        if table is not None and grad_output is not None:  # the reference's table gradient, in the user's shape
            grad_output = grad_output.reshape(table)
        a.zero_grad()
        given, leaves = self._leaves(path, inputs)
        out = self._call_alone(path, given)
        if grad_output is not None and a.requires_grad(out):
            a.backward(out, np.array(grad_output, dtype=self.dtype))
            self.most_backward_calls = max(self.most_backward_calls, a.backward_calls() or 1)
        named = a.named_parameters()
        grads = {ref: self._layout(theirs, _array(a.grad_of(named[theirs]))) for ref, theirs in self._charged(base)}
        result, grad_in = np.array(a.to_numpy(out)), [_array(a.grad_of(t)) for t in leaves]
        ref_shapes = self.ref_shapes.get(path)
        if ref_shapes is not None:
            result = _shaped(result, ref_shapes[1])
            grad_in = [_shaped(g, shape) for g, shape in zip(grad_in, ref_shapes[0], strict=False)]
        if table is not None and result.size == int(np.prod(table)):
            result = result.reshape(table[-2:])
        return result, grad_in, grads

    def _leaves(self, path: str, inputs: list[np.ndarray]) -> tuple[list[Any], list[Any]]:
        """The arguments of the first call of module ``path`` with its float inputs replaced by new leaves
        holding ``inputs`` (the reference's values, in the reference's shapes); and those leaves."""
        a = self.adapter
        args = self.arguments.get(path.split("#")[0], ((), {}))[0]
        mine = self.reshaped.get(path)
        if mine is not None:
            inputs = [_shaped(x, shape) for x, shape in zip(inputs, mine[0], strict=True)]
        given, leaves, fresh, seen, ignored = [], [], list(inputs), 0, self.ignored.get(path, [])
        for x in args:
            dropped = isinstance(x, _Dropped)
            floating = dropped or (a.is_tensor(x) and self._float_input(x))
            if floating and seen not in ignored and fresh:
                leaves.append(self._tensor(fresh.pop(0)))
                given.append(leaves[-1])
            else:  # what the model passed (a tensor let go of after the capture: a new one with its values)
                given.append(self._tensor(x.values) if dropped else x)
            seen += floating
        return given, leaves

    def _let_go(self) -> None:
        """Let go of the graph: the first call's arguments kept for running modules alone hold the float
        tensors the model passed, and through them the whole graph of the forward (every op's saved
        arrays); a stable-array framework's values of them are kept instead (`_leaves` replaces such
        inputs by new leaves anyway)."""
        a = self.adapter

        def thin(x: Any) -> Any:
            if a.is_tensor(x) and a.requires_grad(x) and self._float_input(x):
                return _Dropped(a.to_numpy(x))
            return x

        self.arguments = {path: (tuple(thin(x) for x in args), kwargs)
                          for path, (args, kwargs) in self.arguments.items()}

    def _modules(self) -> dict[str, Any]:
        """The user's modules as the last recorded forward found them (a walk per question would make
        the report's tables quadratic in the modules)."""
        if self.found is None:
            self.found = self.adapter.modules()
        return self.found

    def _call_alone(self, path: str, given: list[Any]) -> Any:
        """Module ``path`` called on ``given`` (its first call's other arguments) and no backward."""
        a = self.adapter
        base = path.split("#")[0]
        kwargs = self.arguments.get(base, ((), {}))[1]
        if self.reports_calls:
            return a.call_module(self.names.modules[base], *given, **kwargs)
        obj = self._modules()[self.names.modules[base]]
        run = obj if self.called_through.get(base, "__call__") == "__call__" else obj.forward
        return run(*given, **kwargs)

    # what the framework can tell about its own code (the optional hooks)
    @_quiet
    def op_check(self, path: str, inputs: list[np.ndarray]) -> dict[str, str] | None:
        """The first op inside module ``path`` whose backward disagrees with finite differences, run
        alone on ``inputs`` with its first call's other arguments (`Adapter.check_ops`). Finite
        differences of float32 values are too coarse to judge an op by: a float32 run checks on a
        float64 twin of the model (`float64_twin`), and without one checks nothing."""
        a = self.adapter
        if not _overrides(a, "check_ops") or not self.can_force or path.split("#")[0] not in self.arguments:
            return None
        if self.dtype != "float64":
            probe = self.float64_twin()
            return None if probe is None else probe.op_check(path, inputs)
        given, leaves = self._leaves(path, inputs)
        out = self._call_alone(path, given)
        if not a.is_tensor(out) or not a.requires_grad(out):
            return None
        bad = a.check_ops(out, leaves)
        if bad is None:
            return None
        if not isinstance(bad, dict) or not {"op", "function", "input", "relative_error"} <= bad.keys():
            raise InputError(f"{type(a).__name__}.check_ops returned {_shown(bad)}: return None, or a dict with "
                             "op, function, input and relative_error")
        return {"op": str(bad["op"]), "source": source_location(bad["function"]), "input": str(bad["input"]),
                "relative_error": f"{float(bad['relative_error']):.3g}"}

    def float64_twin(self) -> AdapterSide | None:
        """This side's model built again in float64 by the adapter's factory (`adapter.rebuild`), holding
        this side's current weights, and knowing how the last capture called each module: None when the
        factory is not known (an adapter instance, a factory without options). Built once per side; the
        weights are loaded again whenever this side's have changed since."""
        probe = self.__dict__.get("_twin")
        weights = self.params()
        if probe is None:
            made = rebuild(self.adapter, "float64")
            if made is None:
                return None
            probe = self._twin = AdapterSide(made, self.config, "float64", weights, impl=self.impl)
        elif probe.__dict__.get("_held") is None or any(not np.array_equal(w, probe._held[n])
                                                        for n, w in weights.items()):
            probe.load(weights)
        probe._held = weights
        for name in ("arguments", "called_through", "reshaped", "tables", "ignored", "tokens"):
            setattr(probe, name, getattr(self, name))  # the last capture's calls, as run_module uses them
        return probe

    @_quiet
    def creation_site(self, tokens: np.ndarray, path: str, slot: int | str) -> str | None:
        """Where the tensor in ``slot`` (an input index, or "output") of the module call ``path`` was made
        (`Adapter.watch_tensors`), when it was built from raw data: "function at file:line"."""
        if not _overrides(self.adapter, "watch_tensors"):
            return None
        log = self._log(lambda x: x)
        with self.adapter.watch_tensors() as made:
            try:
                self._recorded_forward(tokens, log)
            except Exception:  # noqa: BLE001 - the forward already ran once; failing here only loses the detail
                return None
        raw = log.raw.get(path)
        if raw is None:
            return None
        if slot == "output":
            tensor = raw.get("output")
        else:
            inputs = raw["inputs"]
            tensor = inputs[slot][0] if isinstance(slot, int) and slot < len(inputs) else None
        sites = {id(t): (site, by_op) for t, site, by_op in made}  # all alive: the list holds them
        site, by_op = sites.get(id(tensor), (None, True))
        return None if by_op else site

    @_quiet
    def first_raw_tensor(self, tokens: np.ndarray, targets: np.ndarray, path: str | None,
                         inputs: list[np.ndarray]) -> str | None:
        """The first tensor built from raw data (`Adapter.watch_tensors`) while module ``path`` runs alone
        on ``inputs``, or while the loss is computed when ``path`` is None."""
        a = self.adapter
        if not _overrides(a, "watch_tensors"):
            return None
        if path is not None and (not self.can_force or path.split("#")[0] not in self.arguments):
            return None
        made: list[tuple[Any, str, bool]] = []
        try:
            if path is None:  # the loss on the model's logits
                logits = a.forward(tokens)
                with a.watch_tensors() as made:
                    a.loss_and_backward(logits, targets)
            else:
                given, _ = self._leaves(path, inputs)
                with a.watch_tensors() as made:
                    self._call_alone(path, given)
        except Exception:  # noqa: BLE001, S110 - the code already ran once; what it made before raising still counts
            pass
        return next((site for _, site, by_op in made if not by_op), None)


def parameter_origin(results: dict[str, ModuleResult], expected: Capture) -> Origin | None:
    """Backward localization from parameter gradients alone: walking modules in the order the
    backward reaches them, the first whose own parameter gradient differs. Without module
    gradients the fault may be in its backward or in code the gradient passed through since the
    last module whose parameter gradients matched; the hint says so."""
    last_ok: str | None = None
    for call in reversed(expected.ordered("enter")):
        res = results[call.path]
        if res.missing or not res.param_grad:
            continue
        bad = next((c for c in res.param_grad if not c.match), None)
        if bad is None:
            last_ok = call.path
            continue
        kind, words = diagnose.classify(bad.actual, bad.expected, is_grad=True)
        since = (f"since {last_ok or '(model)'}, the last module whose parameter gradients match"
                 if last_ok is not None else "before it (no module with parameters comes earlier in the backward)")
        reason = (f"{bad.tensor} {words}. Only parameter gradients could be compared, so the fault is in this "
                  f"module's backward or in the backward of code the gradient passed through {since}")
        return Origin(call.path, "param_grad", bad, reason=reason, kind=kind)
    return None


# --- loading an adapter by name (the CLI's --adapter) ---------------------------------------
