"""`edgeflow profile` through typer's runner: table, JSON, and errors that name the argument."""

import json

from typer.testing import CliRunner

from edgeflow.cli.main import app

runner = CliRunner()


def test_profile_demo_writes_json(tmp_path):
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["profile", "demo", "--repeats", "2", "--codecs", "int8,int4", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "demo: 70 positions" in r.output
    prof = json.loads(out.read_text())
    assert prof["num_positions"] == 70
    cut = next(pp for pp in prof["positions"] if pp["is_cut"])
    assert set(cut["codecs"]) == {"int8", "int4"}
    assert set(prof["positions"][0]["codecs"]) == {"lossless", "png", "jpeg"}


def test_profile_zoo_model_with_input_shape():
    r = runner.invoke(app, ["profile", "vit", "--input-shape", "1,3,224,224", "--repeats", "1", "--codecs", "int8"])
    assert r.exit_code == 0, r.output


def test_profile_errors_name_the_argument():
    r = runner.invoke(app, ["profile", "demo", "--input-shape", "1,x"])
    assert r.exit_code == 2 and "--input-shape" in r.output
    r = runner.invoke(app, ["profile", "nosuchmodel"])
    assert r.exit_code == 2 and "MODEL" in r.output
    r = runner.invoke(app, ["profile", "demo", "--codecs", "int9"])
    assert r.exit_code == 2 and "int9" in r.output


def test_profile_prints_bytes_and_encode_decode_time_per_codec_per_cut():
    r = runner.invoke(app, ["profile", "demo", "--repeats", "1", "--codecs", "int2,dct:d15"])
    assert r.exit_code == 0, r.output
    assert "int2 KB" in r.output and "dct KB" in r.output and "enc+dec ms" in r.output
    # a cut row's codec cell: KB, then "encode+decode" ms on the next line
    cells = [line for line in r.output.splitlines() if line.count("+") >= 2 and "│" in line]
    assert cells, r.output
