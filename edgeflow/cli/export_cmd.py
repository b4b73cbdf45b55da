"""``edgeflow export``: turn a user's PyTorch model into an artifact every tier loads without the model's code.

    edgeflow export mypkg.models:build_net --input-shape 1,3,224,224 --out model.ef
    edgeflow export ./net.py:Net --input x:1,3,64,64 --out net.ef
    edgeflow export torchvision:mobilenet_v2 --input-shape 1,3,224,224 --out mnv2.ef   # if torchvision is installed
    edgeflow export hf:./minilm --input input_ids:1,16:int64 --input attention_mask:1,16:int64 --out minilm.ef

SOURCE is ``MODULE:FACTORY`` (an importable module, or a ``.py`` file, and a callable in it that takes no
arguments and returns an ``nn.Module``; a module class works), ``torchvision:NAME`` / ``timm:NAME`` (built
with random weights: nothing is downloaded), or ``hf:DIR`` (a Hugging Face model folder, read offline).

An ``hf:`` folder's ``tokenizer.json`` goes into the artifact with its settings (``edgeflow.core.tokenizer``:
max length = the token inputs' dim 1, padding to it, truncation unless ``--no-truncation``), covered by the
fingerprint: the device tokenizes text itself (a sentence workload, or text sent to a device agent).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from edgeflow.errors import ArtifactError, ConfigError, EdgeflowError

__all__ = ["register", "load_source"]

_err = Console(stderr=True)
_out = Console()
HF_DEFAULT_INPUTS = ("input_ids:1,16:int64", "attention_mask:1,16:int64")


def _fail(msg: str) -> None:
    _err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _missing(package: str, how: str) -> ConfigError:
    return ConfigError(f"SOURCE: {package} is not installed; {how}")


def load_source(source: str) -> Any:
    """Build the model SOURCE names (see the module doc).

    Raises:
        ConfigError: the source does not parse, cannot be imported, or does not give an ``nn.Module``; or
            the package a prefix needs is not installed (the message says which to install).
    """
    import torch
    from torch import nn

    kind, sep, rest = source.partition(":")
    if not sep or not kind or not rest:
        raise ConfigError(f"SOURCE {source!r}: expected MODULE:FACTORY, torchvision:NAME, timm:NAME or hf:DIR")
    torch.manual_seed(0)  # models built without weights get the same seeded ones on every run
    if kind == "torchvision":
        try:
            import torchvision  # noqa: F401  (optional; never installed by edgeflow)
            from torchvision import models
        except ImportError:
            raise _missing("torchvision", f"install the torchvision release built for torch {torch.__version__.split('+')[0]}") from None
        try:
            model = models.get_model(rest, weights=None)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"SOURCE {source!r}: {e}") from None
    elif kind == "timm":
        try:
            import timm
        except ImportError:
            raise _missing("timm", "pip install timm (check with --dry-run that it keeps this torch)") from None
        try:
            model = timm.create_model(rest, pretrained=False)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"SOURCE {source!r}: {e}") from None
    elif kind == "hf":
        try:
            from transformers import AutoModel
        except ImportError:
            raise _missing("transformers", "install the text extra: pip install 'edgeflow[text]'") from None
        if not Path(rest).is_dir():
            raise ConfigError(f"SOURCE {source!r}: {rest!r} is not a folder (hf:DIR takes a local model folder)")
        try:
            model = AutoModel.from_pretrained(rest, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"SOURCE {source!r}: cannot load the model folder: {e}") from None
        if hasattr(model, "config"):
            model.config.return_dict = False  # tuples trace more simply than ModelOutput; same tensors
    else:
        model = _from_module(source, kind, rest)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"SOURCE {source!r}: gave a {type(model).__name__}, not a torch.nn.Module")
    # Weights loaded from a safetensors file (from_pretrained) may sit at unaligned offsets of its buffer, where
    # kernels round differently (a tiny BERT's pooler differed by 2e-8 from the same weights in fresh memory).
    # Agents load fresh, aligned copies; give the model the same, so the export check compares like with like.
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.data = t.data.clone()
    return model.eval()


def _from_module(source: str, module: str, factory: str) -> Any:
    try:
        if module.endswith(".py"):
            path = Path(module)
            if not path.is_file():
                raise ConfigError(f"SOURCE {source!r}: no file {module!r}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = mod
            spec.loader.exec_module(mod)
        else:
            if "" not in sys.path:  # as `python -m` does: modules in the current folder import
                sys.path.insert(0, "")
            mod = importlib.import_module(module)
    except ConfigError:
        raise
    except Exception as e:  # importing user code can raise anything; it is the source's fault
        raise ConfigError(f"SOURCE {source!r}: cannot import {module!r}: {type(e).__name__}: {e}") from None
    obj: Any = mod
    for part in factory.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"SOURCE {source!r}: {module!r} has no {factory!r}")
        obj = getattr(obj, part)
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ConfigError(f"SOURCE {source!r}: {factory!r} is a {type(obj).__name__}, not a callable")
    try:
        return obj()
    except Exception as e:  # the user's factory failing is the source's fault
        raise ConfigError(f"SOURCE {source!r}: {factory}() failed: {type(e).__name__}: {e}") from None


def _input_specs(model: Any, source: str, input_shape: str | None, inputs: list[str]) -> list[Any]:
    import torch

    from edgeflow.core.artifact import _first_arg_name
    from edgeflow.core.inputs import InputSpec, parse_input

    if input_shape and inputs:
        raise ConfigError("give --input-shape (one float32 input) or --input NAME:SHAPE:DTYPE (repeatable), not both")
    if inputs:
        return [parse_input(t) for t in inputs]
    if input_shape:
        try:
            shape = tuple(int(s) for s in input_shape.split(","))
            return [InputSpec(_first_arg_name(model), shape, torch.float32)]
        except ValueError as e:
            raise ConfigError(f"--input-shape {input_shape!r}: expected comma-separated ints like 1,3,224,224 ({e})") from None
    if source.startswith("hf:"):
        return [parse_input(t) for t in HF_DEFAULT_INPUTS]
    raise ConfigError("give the model's inputs: --input-shape 1,3,224,224 or --input NAME:SHAPE:DTYPE (repeatable)")


def export(
    source: str = typer.Argument(..., help="MODULE:FACTORY, FILE.py:FACTORY, torchvision:NAME, timm:NAME or hf:DIR"),
    out: Path = typer.Option(..., "--out", help="artifact file to write, e.g. model.ef"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="one float32 input, e.g. 1,3,224,224 (dim 0: batch)"),
    inputs: Optional[List[str]] = typer.Option(None, "--input", help="NAME:SHAPE:DTYPE, repeatable, e.g. input_ids:1,16:int64"),
    truncation: bool = typer.Option(True, "--truncation/--no-truncation",
                                    help="hf: the carried tokenizer cuts text longer than the inputs' length (else refuses it)"),
) -> None:
    """Export a PyTorch model into a self-contained artifact (graph, weights, input spec, fingerprint)."""
    from edgeflow.core.artifact import load_artifact
    from edgeflow.core.export import export_model, save_graph_artifact
    from edgeflow.core.partition import partition

    try:
        model = load_source(source)
        specs = _input_specs(model, source, input_shape, list(inputs or []))
        exported = export_model(model, specs, source=source)
        if source.startswith("hf:"):
            from edgeflow.core.tokenizer import tokenizer_from_folder

            exported.tokenizer = tokenizer_from_folder(source[3:], exported.inputs, truncation=truncation)
        fp = save_graph_artifact(out, exported)
        art = load_artifact(out)  # what an agent will load: the file, not the object in memory
        p = partition(art.model, tuple(art.example_inputs(1).values()))
    except (EdgeflowError, OSError) as e:
        if isinstance(e, ArtifactError) and out.exists() and "cannot export" not in str(e):
            out.unlink()  # written but not loadable: leave nothing behind that an agent could pick up
        _fail(str(e))
        return
    nbytes = sum(v.numel() * v.element_size() for v in exported.weights.values())
    _out.print(f"exported {source} to {out} ({out.stat().st_size / 1e6:.1f} MB)", highlight=False)
    _out.print(f"inputs: {' '.join(str(s) for s in exported.inputs)}  (batch dim {exported.batch})", highlight=False)
    _out.print(f"graph: {len(exported.graph['nodes'])} nodes, {exported.num_outputs} output(s), "
               f"{len(exported.weights)} tensors ({nbytes / 1e6:.1f} MB); {p.num_positions} positions, "
               f"{len(p.cuts)} candidate cuts", highlight=False)  # fmt: skip
    if exported.tokenizer is not None:
        t = exported.tokenizer
        _out.print(f"tokenizer: tokenizer.json, fills {' '.join(t.fills)}, max_length {t.max_length}, padding "
                   f"{t.padding} ({t.pad_token}), truncation {'on' if t.truncation else 'off'}", highlight=False)  # fmt: skip
    elif source.startswith("hf:"):
        _err.print("note: no tokenizer carried (the folder has no tokenizer.json, or the model takes inputs other than "
                   "input_ids/attention_mask/token_type_ids): text must be tokenized by the caller", highlight=False)  # fmt: skip
    _out.print(f"fingerprint: {fp}", highlight=False)
    if source.split(":", 1)[0] in ("torchvision", "timm"):
        _err.print("note: built with seeded random weights (nothing is downloaded): latency and bytes are real, "
                   "predictions are not", highlight=False)  # fmt: skip
    if not exported.exact:
        _err.print(f"[yellow]warning:[/] the exported graph is not bit-exact with the model on the example "
                   f"(max |diff| {exported.max_abs_diff:.3g}); agents compute the exported graph", highlight=False)  # fmt: skip


def register(app: typer.Typer) -> None:
    """Mount ``export`` on the main ``edgeflow`` app."""
    app.command("export")(export)
