"""The ``edgeflow`` command line. Only the CLI reads files given by users and prints; the library takes objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgeflow.errors import EdgeflowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Edge-cloud split inference.")
console = Console()
if not console.is_terminal:  # piped or logged: don't squeeze wide tables into 80 columns
    console = Console(width=160)

DEFAULT_ACTIVATION_CODECS = ("lossless", "fp16", "int8", "int8c", "int4", "int2")
DEFAULT_INPUT_CODECS = ("lossless", "png", "jpeg")


_err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("edgeflow")
        except PackageNotFoundError:  # run from a source tree without an install
            v = "unknown (not installed)"
        typer.echo(f"edgeflow {v}")
        raise typer.Exit()


@app.callback()
def _main(
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="print edgeflow's version and exit"),  # fmt: skip
) -> None:
    """Edge-cloud split inference: cut a PyTorch model, run its slices on device, edge and cloud agents."""


def _fail(msg: str) -> None:
    """Every CLI error: on stderr, exit status 2."""
    _err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(2)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        _fail(f"--input-shape: expected comma-separated ints like 1,3,224,224, got {text!r}")
    if not shape or any(d <= 0 for d in shape):
        _fail(f"--input-shape: dimensions must be positive, got {text!r}")
    return shape


@app.command()
def profile(
    model: str = typer.Argument("demo", help="zoo name (resnet18, mobilenet_v2, vit), 'demo', or an artifact path"),
    input_shape: Optional[str] = typer.Option(None, help="e.g. 1,3,224,224 (default: the model's own size)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the profile as JSON here"),
    repeats: int = typer.Option(10, min=1, max=1000, help="timed runs per node (median kept)"),
    threads: int = typer.Option(0, min=0, help="torch intra-op threads (0: torch's default)"),
    codecs: str = typer.Option(",".join(DEFAULT_ACTIVATION_CODECS), help="activation codecs to measure"),
    all_positions: bool = typer.Option(False, "--all", help="show every position, not only candidate cuts"),
) -> None:
    """Profile every cut of MODEL: compute time, FLOPs, bytes per codec, encode/decode time."""
    import torch

    from edgeflow.core.codecs import get_codec
    from edgeflow.core.partition import partition
    from edgeflow.core.profile import profile_model

    if threads:
        torch.set_num_threads(threads)
    try:
        net, default_shape = _load_model(model)
        if isinstance(default_shape, dict):  # an exported model with its own input spec
            if input_shape:
                _fail("--input-shape: this artifact carries its input spec; its shapes are fixed")
            xs, image = tuple(default_shape.values()), False
        else:
            shape = _parse_shape(input_shape) if input_shape else default_shape
            xs, image = (_example_input(model, shape),), len(shape) == 4 and shape[1] in (1, 3)
        p = partition(net, xs)
        act = [get_codec(c.strip()) for c in codecs.split(",") if c.strip()]
        inp = [get_codec(c) for c in DEFAULT_INPUT_CODECS] if image else []
        prof = profile_model(p, xs, name=model, activation_codecs=act, input_codecs=inp, repeats=repeats)
    except EdgeflowError as e:
        _fail(str(e))
    _print_profile(prof, [c.name for c in act], all_positions)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(prof.to_json(), indent=1))
        console.print(f"profile written to {json_out}")


def _load_model(name: str):
    """(model in eval mode, default input shape) for a zoo name, 'demo', or an artifact path; for an exported
    artifact, its example inputs by name instead of a shape."""
    import torch

    from edgeflow.core.artifact import load_artifact
    from edgeflow.core.data import DEMO_WEIGHTS
    from edgeflow.core.zoo import ZOO_NAMES, build_model

    if name in ZOO_NAMES:
        torch.manual_seed(0)  # untrained: timings and FLOPs are real, activation statistics are not
        net = build_model(name).eval()
        size = getattr(getattr(net, "config", None), "image_size", 224)
        return net, (1, 3, size, size)
    if name != "demo" and not Path(name).exists():
        from edgeflow.core.zoo import ZOO_NAMES as names

        _fail(f"MODEL: {name!r} is not a zoo model ({', '.join(names)}), 'demo', nor an artifact file")
    art = load_artifact(DEMO_WEIGHTS if name == "demo" else name)
    if art.arch == "edgeflow.graph":  # edgeflow export: several inputs, any dtypes
        return art.model.eval(), art.example_inputs(1)
    return art.model.eval(), tuple(art.inputs[0].shape)


def _example_input(model: str, shape: tuple[int, ...]):
    """A realistic input: demo test images for the demo model, photo crops for image models, else noise."""
    import torch

    from edgeflow.core import data

    if len(shape) == 4 and shape[1] == 3 and shape[2] == shape[3]:
        if model == "demo" and shape[2] == data.DEMO_IMAGE_SIZE:
            return data.load_demo_dataset("test")[0][: shape[0]].contiguous()
        return data.photo_batch(shape[0], shape[2])
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def _print_profile(prof, codec_names: list[str], all_positions: bool) -> None:
    table = Table(title=f"{prof.model}: {prof.num_positions} positions, full forward "
                  f"{prof.full_forward_s * 1e3:.2f} ms ({prof.threads} threads)")
    for col in ("pos", "after", "cum ms", "MFLOPs", "n", "fp32 KB"):
        table.add_column(col, justify="right")
    for c in codec_names:
        table.add_column(f"{c} KB", justify="right")
    table.add_column("int8 enc+dec ms", justify="right")
    for pp in prof.positions:
        if not (all_positions or pp.is_cut or pp.position in (0, prof.num_positions)):
            continue
        codec_kb = [f"{pp.codecs[c].nbytes / 1e3:.1f}" if c in pp.codecs else "" for c in codec_names]
        i8 = pp.codecs.get("int8")
        table.add_row(
            str(pp.position), pp.label, f"{pp.cum_compute_s * 1e3:.2f}", f"{pp.cum_flops / 1e6:.1f}",
            str(len(pp.tensors)), f"{pp.nbytes / 1e3:.1f}", *codec_kb,
            f"{(i8.encode_s + i8.decode_s) * 1e3:.2f}" if i8 else "",
        )
    console.print(table)
    if prof.positions[0].codecs:
        inp = ", ".join(f"{k} {v.nbytes / 1e3:.1f} KB" for k, v in prof.positions[0].codecs.items())
        console.print(f"input ({prof.positions[0].nbytes / 1e3:.1f} KB fp32): {inp}")


def _mount_subcommands() -> None:
    """Sub-command groups from the outer layers register themselves here."""
    from edgeflow.cli import agent_cmds, certs_cmd, export_cmd, plan_cmd, ray_cmd, run_cmd

    agent_cmds.register(app)
    export_cmd.register(app)
    plan_cmd.register(app)
    run_cmd.register(app)
    certs_cmd.register(app)
    ray_cmd.register(app)


_mount_subcommands()

if __name__ == "__main__":
    app()
