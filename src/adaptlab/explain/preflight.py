"""Pre-flight: find what breaks hook-based explainers before they run, then patch or route.

SHAP's DeepExplainer wraps every module in backward hooks and applies DeepLIFT rules to the
module types it knows. It breaks on in-place ops after a hooked module (timm's and
torchvision's ResNets add the shortcut in place: shap #3466), gives wrong values for reused
nonlinear modules (#1479) and functional activations (#3938), and only warns about module
types it does not know (LayerNorm, attention, SiLU: #3438). None of the libraries scans for
these, so this module does: one recorded forward pass, then either a patched deep copy (in-place
ops made out of place, checked to give the same outputs) or a reason to route elsewhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

# Out-of-place equivalents of the in-place calls seen in backbones. ``x += y`` reaches
# ``__torch_function__`` as ``Tensor.add_``; its result is what Python rebinds ``x`` to.
_OUT_OF_PLACE = {"add_": torch.add, "sub_": torch.sub, "mul_": torch.mul, "div_": torch.div,
                 "relu_": torch.relu, "clamp_": torch.clamp, "sigmoid_": torch.sigmoid}
_NONLINEAR_FUNCTIONALS = {"relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "elu",
                          "leaky_relu", "hardswish", "hardsigmoid", "mish", "softplus",
                          "scaled_dot_product_attention", "layer_norm"}


@dataclass
class Finding:
    kind: str  # in-place, reused-module, unsupported-module, functional
    where: str
    detail: str

    def text(self) -> str:
        return f"{self.kind} at {self.where or 'top level'}: {self.detail}"


@dataclass
class PreflightReport:
    findings: list[Finding] = field(default_factory=list)

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def summary(self, kind: str, limit: int = 3) -> str:
        found = self.of(kind)
        names = "; ".join(f.text() for f in found[:limit])
        return names + (f" (and {len(found) - limit} more)" if len(found) > limit else "")


class _Recorder(TorchFunctionMode):
    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.calls: list[tuple[str, str, bool]] = []  # (function, module, in_place)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = resolve_name(func) or getattr(func, "__name__", "")
        short = name.rsplit(".", 1)[-1]
        in_place = short in _OUT_OF_PLACE or bool(kwargs.get("inplace"))
        self.calls.append((short, self.stack[-1] if self.stack else "", in_place))
        return func(*args, **kwargs)


def deep_supported_types() -> tuple[type, ...]:
    """The module types DeepExplainer has rules for, read from SHAP itself."""
    from shap.explainers._deep import deep_pytorch

    names = set(deep_pytorch.op_handler)
    return tuple(t for t in _all_module_types() if t.__name__ in names)


def _all_module_types() -> list[type]:
    out, todo = [], [nn.Module]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def scan(module: nn.Module, example: torch.Tensor) -> PreflightReport:
    """One forward pass of ``module`` on ``example`` with every call recorded."""
    names = {id(m): name for name, m in module.named_modules()}
    stack: list[str] = []
    calls_per_module: dict[str, int] = {}
    handles = []

    def pre(mod, _inputs):
        name = names.get(id(mod), type(mod).__name__)
        stack.append(name)
        calls_per_module[name] = calls_per_module.get(name, 0) + 1

    def post(mod, _inputs, _output):
        stack.pop()

    for sub in module.modules():
        handles.append(sub.register_forward_pre_hook(pre))
        handles.append(sub.register_forward_hook(post))
    recorder = _Recorder(stack)
    try:
        with torch.no_grad(), recorder:
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    return _findings(module, recorder.calls, calls_per_module)


def _findings(module: nn.Module, calls, calls_per_module) -> PreflightReport:
    report = PreflightReport()
    supported = deep_supported_types()
    modules = dict(module.named_modules())
    seen: set[tuple[str, str]] = set()
    for func, where, in_place in calls:
        owner = modules.get(where)
        leaf = owner is not None and not list(owner.children())
        if in_place and ("in-place", where) not in seen:
            seen.add(("in-place", where))
            report.findings.append(Finding("in-place", where, f"{func} modifies a tensor in place"))
        elif (func in _NONLINEAR_FUNCTIONALS and not leaf
              and (func, where) not in seen):
            seen.add((func, where))
            report.findings.append(Finding("functional", where,
                                           f"{func} called as a function, not a module"))
    for name, count in calls_per_module.items():
        sub = modules.get(name)
        if sub is not None and count > 1 and not list(sub.children()) \
                and not isinstance(sub, nn.Identity):
            report.findings.append(Finding("reused-module", name,
                                           f"{type(sub).__name__} called {count} times per forward"))
    for name, sub in modules.items():
        if name in calls_per_module and not list(sub.children()) and not isinstance(sub, supported):
            report.findings.append(Finding("unsupported-module", name,
                                           f"DeepExplainer has no rule for {type(sub).__name__}"))
    return report


class _OutOfPlace(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        short = (resolve_name(func) or getattr(func, "__name__", "")).rsplit(".", 1)[-1]
        if short in _OUT_OF_PLACE:
            return _OUT_OF_PLACE[short](*args, **kwargs)
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        return func(*args, **kwargs)


class OutOfPlaceCopy(nn.Module):
    """A deep copy of a module whose forward runs with every in-place op made out of place."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(module)
        for sub in self.inner.modules():
            if getattr(sub, "inplace", False) is True:
                sub.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _OutOfPlace():
            return self.inner(x)


@dataclass
class Preparation:
    """The module a clean-graph method should run on, or why it must not run."""

    module: nn.Module | None
    note: str  # what was done, for the report
    refused: str | None = None


def prepare_clean_graph(score: nn.Module, example: torch.Tensor,
                        tolerance: float = 1e-4) -> Preparation:
    """Patch a copy of ``score`` for DeepExplainer, or refuse with the reason."""
    report = scan(score, example)
    for kind in ("unsupported-module", "reused-module", "functional"):
        if report.of(kind):
            return Preparation(None, "", refused=f"DeepExplainer cannot explain this model "
                                                 f"correctly: {report.summary(kind)}")
    if not report.of("in-place"):
        return Preparation(copy.deepcopy(score), "pre-flight found nothing to patch")
    patched = OutOfPlaceCopy(score).eval()
    with torch.no_grad():
        difference = (patched(example) - score(example)).abs().max().item()
    if difference > tolerance:
        return Preparation(None, "", refused=f"the out-of-place copy changes the outputs by "
                                             f"{difference:.3g}; not trusting it")
    count = len(report.of("in-place"))
    return Preparation(patched, f"ran on a patched deep copy: {count} in-place operation site(s) "
                                f"made out of place ({report.summary('in-place', 2)}); outputs "
                                f"identical within {tolerance}")
