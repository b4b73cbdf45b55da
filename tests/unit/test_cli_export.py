"""`edgeflow export` through typer's runner: a user's model file in, a loadable artifact out; errors on stderr."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgeflow.cli.main import app
from edgeflow.core.artifact import load_artifact

runner = CliRunner()

USER_CODE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, frame):
            return self.fc(torch.relu(self.conv(frame)).mean((2, 3)))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)

        def forward(self, tokens, mask):
            return (self.embed(tokens) * mask.unsqueeze(-1)).sum(1)

    class Branchy(nn.Module):
        def forward(self, x):
            if x.max() > 0.5:
                return x + 1
            return x

    def make():
        torch.manual_seed(7)
        return Net()

    not_a_model = 3
    """
)


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_nets.py"
    path.write_text(USER_CODE)
    return path


def test_export_a_factory_from_a_file(user_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.ef"
    r = runner.invoke(app, ["export", f"{user_file}:make", "--input-shape", "1,3,12,12", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "inputs: frame:1,3,12,12:float32  (batch dim dynamic)" in r.stdout and "fingerprint:" in r.stdout
    art = load_artifact(out)
    assert [str(s) for s in art.inputs] == ["frame:1,3,12,12:float32"]
    torch.manual_seed(7)
    spec = importlib.util.spec_from_file_location("user_nets_again", user_file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(art.model(x), mod.make()(x))


def test_export_two_inputs_with_int64(user_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "pair.ef"
    r = runner.invoke(app, ["export", f"{user_file}:Pair", "--input", "tokens:1,6:int64", "--input", "mask:1,6:float32",
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    art = load_artifact(out)
    assert [(s.name, s.dtype) for s in art.inputs] == [("tokens", torch.int64), ("mask", torch.float32)]


@pytest.mark.parametrize(
    "args, words",
    [
        (["{f}:Branchy", "--input-shape", "1,4"], ["cannot export Branchy", "in forward", "if x.max() > 0.5:"]),
        (["{f}:nope", "--input-shape", "1,4"], ["has no 'nope'"]),
        (["{f}:not_a_model", "--input-shape", "1,4"], ["is a int, not a callable"]),
        (["{f}:make", "--input-shape", "1,3,8,8", "--input", "x:1,3,8,8"], ["not both"]),
        (["{f}:make"], ["give the model's inputs"]),
        (["{f}:make", "--input", "frame:1,3,8,8:complex64"], ["dtype 'complex64' is not one of"]),
        (["{f}:make", "--input", "frame:1,3,8,8", "--input", "extra:1,4"], ["cannot export Net", "TypeError"]),
        (["no_such_module_here:make", "--input-shape", "1,4"], ["cannot import 'no_such_module_here'"]),
        (["make", "--input-shape", "1,4"], ["expected MODULE:FACTORY"]),
    ],
)
def test_errors_go_to_stderr_and_name_the_problem(user_file: Path, tmp_path: Path, args: list[str], words: list[str]) -> None:
    out = tmp_path / "x.ef"
    r = runner.invoke(app, ["export", *(a.format(f=user_file) for a in args), "--out", str(out)])
    assert r.exit_code == 2, r.output
    err = " ".join(r.stderr.split())
    assert all(w in err for w in words), err
    assert not out.exists() and "Traceback" not in r.output


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_missing_says_what_to_install(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", "torchvision:resnet18", "--input-shape", "1,3,32,32", "--out", str(tmp_path / "x.ef")])
    assert r.exit_code == 2 and "torchvision is not installed" in r.stderr


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_hf_without_transformers_names_the_extra(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", f"hf:{tmp_path}", "--out", str(tmp_path / "x.ef")])
    assert r.exit_code == 2 and "edgeflow[text]" in " ".join(r.stderr.split())


def test_hf_folder_exports_with_token_inputs(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    transformers.BertModel(cfg).eval().save_pretrained(tmp_path / "tiny-bert")
    out = tmp_path / "bert.ef"
    r = runner.invoke(app, ["export", f"hf:{tmp_path / 'tiny-bert'}", "--input", "input_ids:1,8:int64",
                            "--input", "attention_mask:1,8:int64", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr, r.stderr
    art = load_artifact(out)
    model = transformers.AutoModel.from_pretrained(tmp_path / "tiny-bert", local_files_only=True).eval()
    for t in [*model.parameters(), *model.buffers()]:
        t.data = t.data.clone()  # aligned, as an agent's copies are (see load_source)
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.tensor([[1] * 8, [1] * 3 + [0] * 5])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, return_dict=False)
        got = art.model(ids, mask)
    assert len(got) == 2 and all(torch.equal(g, w) for g, w in zip(got, want))
    assert art.tokenizer is None and "no tokenizer carried" in " ".join(r.stderr.split())  # the folder has none


def test_hf_folder_with_a_tokenizer_carries_it(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    from edgeflow.testing.tinybert import tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "tiny-bert")
    out = tmp_path / "bert.ef"
    args = ["export", f"hf:{folder}", "--input", "input_ids:1,8:int64", "--input", "attention_mask:1,8:int64",
            "--input", "token_type_ids:1,8:int64", "--no-truncation", "--out", str(out)]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert ("tokenizer: tokenizer.json, fills input_ids attention_mask token_type_ids, max_length 8, padding "
            "max_length ([PAD]), truncation off") in " ".join(r.stdout.split()), r.stdout  # fmt: skip
    art = load_artifact(out)
    assert art.tokenizer is not None and art.tokenizer.truncation is False
    assert art.tokenizer.tokenizer_json == (folder / "tokenizer.json").read_text()


def test_a_scenario_loads_an_exported_artifact_relative_to_its_file(user_file: Path, tmp_path: Path) -> None:
    from edgeflow.cli.run_cmd import read_scenario
    from edgeflow.errors import ConfigError

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "models").mkdir()
    r = runner.invoke(app, ["export", f"{user_file}:make", "--input-shape", "1,3,12,12", "--out", str(tmp_path / "models" / "net.ef")])
    assert r.exit_code == 0, r.output
    text = textwrap.dedent(
        f"""
        name: mine
        nodes:
          device: {{file: {repo / 'nodes' / 'device.yaml'}}}
          edge: {{file: {repo / 'nodes' / 'edge.yaml'}}}
          cloud: {{file: {repo / 'nodes' / 'cloud.yaml'}}}
        model: {{artifact: models/net.ef}}
        workload: {{source: synthetic, requests: 4}}
        """
    )
    (tmp_path / "s.yaml").write_text(text)
    scenario, _ = read_scenario(tmp_path / "s.yaml")
    assert scenario.model.artifact == str(tmp_path / "models" / "net.ef")
    (tmp_path / "bad.yaml").write_text(text.replace("models/net.ef", "models/none.ef"))
    with pytest.raises(ConfigError, match=r"model.artifact: no file 'models/none.ef'"):
        read_scenario(tmp_path / "bad.yaml")
