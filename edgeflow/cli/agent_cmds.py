"""``edgeflow agent``, ``edgeflow infer`` and ``edgeflow describe``: run a tier, submit inputs to the chain, and
ask a running agent what it is and has been through.

    edgeflow agent --node nodes/cloud.yaml                     # serves until SIGTERM/SIGINT
    edgeflow agent --node nodes/edge.yaml --port 0 --upstream 127.0.0.1:50051
    edgeflow infer --node nodes/device.yaml --input digit.png  # device tier in process, rich table
    edgeflow infer --via 127.0.0.1:50050 --input x.npy --json  # submit to a running agent
    edgeflow infer --via 127.0.0.1:50050 --input sentences.txt # text: the device agent tokenizes it
    edgeflow describe 127.0.0.1:50052 [--json]                 # role, plan, model, upstream, counters

The agent prints one line ``edgeflow agent <role> listening on <host:port>`` to stdout once it serves
(tests and scripts read the bound port from it), and logs to stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgeflow.errors import ConfigError, EdgeflowError

__all__ = ["register", "read_node_file", "load_input"]

_out = Console()
if not _out.is_terminal:
    _out = Console(width=132)  # piped output: room for the breakdown table
_err = Console(stderr=True)


def _fail(msg: str) -> None:
    _err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(2)


def _client_tls(ca: Path | None, cert: Path | None, key: Path | None) -> Any:
    """``TlsFiles`` for a client from ``--ca/--cert/--key`` (None: plaintext); a CLI error for a bad combination."""
    from edgeflow.transport import TlsFiles

    if ca is None and cert is None and key is None:
        return None
    if ca is None:
        _fail("--cert/--key need --ca (the CA certificate that signed the agent's)")
    if (cert is None) != (key is None):
        _fail("give --cert and --key together (the client certificate and its private key)")
    for flag, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path is not None and not path.is_file():
            _fail(f"{flag}: {path}: no such file")
    return TlsFiles(cert=cert, key=key, ca=ca)


_CA_HELP = "connect with TLS, trusting this CA certificate (PEM; `edgeflow certs` writes ca.pem)"
_CERT_HELP = "with --ca: present this client certificate (PEM), for an agent that requires mutual TLS"
_KEY_HELP = "the private key of --cert (PEM)"


def read_node_file(
    path: Path, *, port: int | None = None, upstream: str | None = None, plan: str | None = None, artifact: str | None = None
) -> Any:
    """Read and validate a node file, applying command-line overrides.

    Raises:
        ConfigError: unreadable file, bad YAML, or an invalid field (named by its path).
    """
    import yaml

    from edgeflow.config import NodeConfig

    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read node file: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)  # safe_load: plain data only, no object construction
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    cfg = NodeConfig.from_mapping(data, source=str(path)).resolve_paths(path.resolve().parent)
    overrides: dict[str, Any] = {}
    if port is not None:
        host = cfg.listen.address.rsplit(":", 1)[0]
        overrides["listen.address"] = f"{host}:{port}"
    if upstream is not None:
        overrides["upstream.address"] = upstream
    if plan is not None:
        overrides["plan"] = plan
    if artifact is not None:
        overrides["model.artifact"] = artifact
        if artifact != cfg.model.artifact:
            overrides["model.fingerprint"] = None  # the file's pin names the file's artifact, not this one
    return cfg.with_overrides(**overrides) if overrides else cfg


def load_input(path: Path, image_size: tuple[int, int] | None, names: list[str] | None = None) -> Any:
    """Load a model input: an image (png/jpg: RGB, resized to ``image_size``, float32 in [0, 1], batch 1),
    a ``.npy`` array (loaded without pickle; a 3-d array gets a batch dim), or a ``.safetensors`` file of
    named tensors, one per model input (``names``, in the model's order; returned as a tuple).

    Raises:
        ConfigError: unreadable or unsupported file.
    """
    import numpy as np
    import torch

    suffix = path.suffix.lower()
    if suffix == ".txt":  # sentences, one a line: text for a model that carries a tokenizer (returned as a list)
        from edgeflow.core.text import read_sentences

        return read_sentences(path)
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            want = names or sorted(tensors)
            missing, extra = [n for n in want if n not in tensors], sorted(set(tensors) - set(want))
            if missing or extra:
                raise ConfigError(f"--input {path}: the model takes inputs {want}; missing {missing}, unexpected {extra}")
            return tuple(tensors[n] for n in want)
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            t = torch.from_numpy(np.ascontiguousarray(arr))
            return t.unsqueeze(0) if t.dim() == 3 else t
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as im:
                im = im.convert("RGB")
                if image_size is not None and im.size != (image_size[1], image_size[0]):
                    im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
            return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, H, W)
    except ConfigError:
        raise
    except Exception as e:  # PIL, numpy and safetensors raise their own types on a malformed file
        raise ConfigError(f"--input {path}: cannot load: {type(e).__name__}: {e}") from None
    raise ConfigError(f"--input {path}: unsupported file type {suffix!r}; use .png, .jpg, .npy, .safetensors or .txt")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def agent(
    node: Path = typer.Option(..., "--node", help="node file, e.g. nodes/cloud.yaml"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="override the listen port (0: any free port)"),
    upstream: Optional[str] = typer.Option(None, "--upstream", help="override upstream.address (host:port)"),
    plan: Optional[str] = typer.Option(None, "--plan", help="override the plan, e.g. 'device[0:14]|int8 > cloud[14:]'"),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="override model.artifact"),
    profile_repeats: int = typer.Option(3, min=0, max=100, help="timed runs per segment for Describe's compute profile"),
    log_level: str = typer.Option("info", help="debug, info, warning, error"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535,
                                               help="serve Prometheus /metrics on this port (overrides metrics.port; 0: any free port)"),
) -> None:
    """Run one tier's agent until SIGTERM or SIGINT."""
    import torch

    from edgeflow.agent.serve import serve

    _setup_logging(log_level)
    log = logging.getLogger("edgeflow.agent")
    try:
        cfg = read_node_file(node, port=port, upstream=upstream, plan=plan, artifact=artifact)
        if metrics_port is not None:
            cfg = cfg.with_overrides(**{"metrics.port": metrics_port})
        torch.set_num_threads(cfg.compute.threads)
        served = serve(cfg, profile_repeats=profile_repeats)
    except (EdgeflowError, OSError) as e:
        _fail(str(e))
        return
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"edgeflow agent {cfg.role} listening on {served.address}", flush=True)
    if served.metrics_address is not None:
        print(f"edgeflow agent {cfg.role} metrics on http://{served.metrics_address}/metrics", flush=True)
    log.info("%s agent: plan %s, model %s, upstream %s, slowdown_factor %.2f", cfg.role, served.agent.plan,
             served.agent.fingerprint, cfg.upstream.address if cfg.upstream else "none",
             served.agent.config.compute.slowdown_factor)  # device_speed resolved (edgeflow.agent.speed)
    served.handshake_in_background()
    while not stop.wait(0.5):  # wake up regularly so signals are handled promptly
        pass
    log.info("%s received; draining (grace %.1f s)", received[0] if received else "stop", cfg.deadlines.shutdown_grace_s)
    finished = served.shutdown(cfg.deadlines.shutdown_grace_s)
    log.info("stopped (%s)", "all requests finished" if finished else "in-flight requests were cancelled")


def infer(
    input: Path = typer.Option(..., "--input", help="image (.png/.jpg), .npy array, .safetensors of named inputs, or .txt "
                               "of sentences (one a line) for a model that carries a tokenizer"),
    node: Optional[Path] = typer.Option(None, "--node", help="run the device tier in process from this node file"),
    via: Optional[str] = typer.Option(None, "--via", help="instead, submit to a running agent at host:port"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="with --via: bearer token file (agent's auth)"),
    ca: Optional[Path] = typer.Option(None, "--ca", help="with --via: " + _CA_HELP),
    cert: Optional[Path] = typer.Option(None, "--cert", help="with --via: " + _CERT_HELP),
    key: Optional[Path] = typer.Option(None, "--key", help=_KEY_HELP),
    upstream: Optional[str] = typer.Option(None, "--upstream", help="override upstream.address of --node"),
    plan: Optional[str] = typer.Option(None, "--plan", help="override the plan of --node"),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="override model.artifact of --node"),
    timeout_s: float = typer.Option(30.0, "--timeout", min=0.001, help="deadline for the request, seconds"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Run one input through the chain and print the result with its per-tier breakdown."""
    if (node is None) == (via is None):
        _fail("give exactly one of --node (device tier in process) or --via HOST:PORT (running agent)")
    if node is not None and (ca or cert or key or token_file):
        _fail("--ca/--cert/--key/--token-file go with --via; with --node the node file's upstream.tls/auth apply")
    tls = _client_tls(ca, cert, key)
    try:
        if via is not None:
            from edgeflow.agent.client import AgentClient

            from edgeflow.transport.auth import load_token

            token = load_token(token_file) if token_file is not None else None
            with AgentClient(via, tls=tls, token=token) as client:
                d = client.describe(timeout_s=timeout_s)
                shape = d.inputs[0][2] if d.inputs else ()
                x = load_input(input, tuple(shape[-2:]) if len(shape) == 4 else None, [n for n, _, _ in d.inputs])
                result = client.infer(x, timeout_s=timeout_s)
                plan_text = d.plan
        else:
            from edgeflow.agent.client import DeviceClient

            assert node is not None
            cfg = read_node_file(node, upstream=upstream, plan=plan, artifact=artifact)
            with DeviceClient.from_config(cfg) as device:
                example = device.agent.runtime.example_input[0]
                names = [t.name for t in device.agent.runtime.cut_info(0).tensors]
                x = load_input(input, tuple(example.shape[-2:]) if example.dim() == 4 else None, names)
                if isinstance(x, list):  # sentences: this process is the device, so they are tokenized here
                    tokenizer = device.agent.runtime.tokenizer
                    if tokenizer is None:
                        raise ConfigError(f"--input {input}: sentences, but the model takes no text (inputs {names})")
                    x = tuple(tokenizer.encode(x))
                result = device.infer(x, timeout_s=timeout_s)
                plan_text = str(device.agent.plan)
    except EdgeflowError as e:
        _fail(f"{type(e).__name__}: {e}")
        return
    data = {"plan": plan_text, **result.to_json()}
    if json_out:
        print(json.dumps(data, indent=1))
        return
    _print_result(data)


def _print_result(data: dict[str, Any]) -> None:
    where = data["answered_by"] + (f" (exit at {data['exit_position']}, confidence {data['exit_confidence']:.3f})"
                                   if data["exit_position"] >= 0 else " (model output)")
    _out.print(f"plan: {data['plan']}", highlight=False)
    if "prediction" in data:
        conf = ", ".join(f"{c:.3f}" for c in data["confidence"])
        _out.print(f"prediction: {data['prediction']}  confidence: {conf}", highlight=False)
    _out.print(f"answered by: {where}   latency: {data['latency_s'] * 1e3:.2f} ms", highlight=False)
    table = Table(title="per-tier breakdown (ms, bytes)")
    cols = ("tier", "range", "queue", "compute", "encode", "network", "decode", "total", "bytes in", "bytes out", "bytes back")
    for c in cols:
        table.add_column(c, justify="left" if c in ("tier", "range") else "right")
    for t in data["tiers"]:
        ms = [f"{t[k] * 1e3:.2f}" for k in ("queue_s", "compute_s", "encode_s", "network_s", "decode_s", "total_s")]
        table.add_row(t["tier"], f"[{t['start']}:{t['stop']}]", *ms, str(t["bytes_in"]), str(t["bytes_out"]), str(t["bytes_back"]))
    _out.print(table)


def describe(
    address: str = typer.Argument(..., help="the agent's host:port"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="bearer token file (agent's auth)"),
    ca: Optional[Path] = typer.Option(None, "--ca", help=_CA_HELP),
    cert: Optional[Path] = typer.Option(None, "--cert", help=_CERT_HELP),
    key: Optional[Path] = typer.Option(None, "--key", help=_KEY_HELP),
    timeout_s: float = typer.Option(5.0, "--timeout", min=0.001, help="seconds to wait for the agent"),
    json_out: bool = typer.Option(False, "--json", help="print the answer as JSON"),
) -> None:
    """Ask a running agent what it serves and what it has been through (requests, fallbacks, duplicates, shed)."""
    from edgeflow.transport import PeerClient
    from edgeflow.transport.auth import load_token

    tls = _client_tls(ca, cert, key)
    try:
        token = load_token(token_file) if token_file is not None else None
        with PeerClient(address, tls=tls, token=token) as peer:
            peer.wait_ready(timeout_s)  # an unreachable agent: "not reachable within", not a bare deadline
            d = peer.describe(timeout_s=timeout_s)
    except EdgeflowError as e:
        _fail(f"{type(e).__name__}: {e}")
        return
    data = {"address": address, "role": d.role, "plan": d.plan, "fingerprint": d.fingerprint, "version": d.version,
            "upstream": d.upstream, "slowdown_factor": d.slowdown_factor, "counters": d.counters.to_json(),
            "live": d.live.to_json() if d.live is not None else None}  # fmt: skip
    if json_out:
        print(json.dumps(data, indent=1))
        return
    c = d.counters
    _out.print(f"{d.role} agent at {address} (edgeflow {d.version or '?'})", highlight=False)
    _out.print(f"plan: {d.plan}", highlight=False)
    _out.print(f"model: {d.fingerprint}", highlight=False)
    _out.print(f"upstream: {d.upstream or 'none'}", highlight=False)
    if d.slowdown_factor != 1.0:
        _out.print(f"compute: emulated slowdown x{d.slowdown_factor:.2f}", highlight=False)
    _out.print(f"requests: {c.requests}  fallbacks: {c.fallbacks}  duplicates served: {c.duplicates_served}  "
               f"shed: {c.shed}", highlight=False)  # fmt: skip
    if c.last_fallback:
        _out.print(f"last fallback: {c.last_fallback}", highlight=False, soft_wrap=True)  # one line: grep-able
    if d.live is not None:
        _print_live(d.live)


def _print_live(live: Any) -> None:
    """The live planner's part of ``edgeflow describe``: state, prediction, link estimates, switches."""
    if not live.ready:
        _out.print(f"live planner: measuring the chain; serving the safe plan {live.safe_plan}", highlight=False)
        return
    if live.error:
        _out.print(f"live planner: did not start ({live.error}); serving {live.safe_plan}", highlight=False, soft_wrap=True)
        return
    _out.print(f"live planner: ready after {live.first_plan_s:.2f} s; {live.requests} replies learned from; "
               f"predicted latency {live.predicted_latency_s * 1e3:.1f} ms", highlight=False)  # fmt: skip
    for link in live.links:
        bw = f"{link.bandwidth_bps / 1e6:.2f} Mbit/s" if link.bandwidth_bps else "not measured"
        _out.print(f"  link {link.name}: {bw}, round trip {link.rtt_s * 1e3:.2f} ms", highlight=False)
    if live.compute_factor:
        factors = ", ".join(f"{k} x{v:.2f}" for k, v in sorted(live.compute_factor.items()))
        _out.print(f"  compute correction: {factors}", highlight=False)
    if live.down:
        _out.print(f"  down: {', '.join(live.down)}", highlight=False)
    _out.print(f"  last decision: {live.last_reason}", highlight=False, soft_wrap=True)
    _out.print(f"  switches: {len(live.switches)}" + (" (latest first)" if live.switches else ""), highlight=False)
    for sw in reversed(live.switches[-10:]):
        _out.print(f"    t={sw.t_s:.2f} s after request {sw.request_index}: {sw.old} -> {sw.new} ({sw.reason})",
                   highlight=False, soft_wrap=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    """Mount ``agent``, ``infer`` and ``describe`` on the main ``edgeflow`` app."""
    app.command("agent")(agent)
    app.command("infer")(infer)
    app.command("describe")(describe)
