import json
import shutil
import subprocess
import sys

import pytest

from bench import cli

COMMANDS = ["run", "list", "data", "perf", "tables", "regress", "eval", "sweep", "pretrain",
            "report", "analyze"]


def test_help_lists_every_command(bench_cli, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in COMMANDS:
        assert f"    {cmd}" in text


def test_list_all_sections(bench_cli, workdir):
    code, out, err = bench_cli("list")
    assert code == 0, err
    for section in ("backbones", "tasks", "datasets", "profiles"):
        assert section in out
    assert "Market1501" in out and "smoke" in out and "paper" in out


def test_list_json_and_pattern(bench_cli, workdir):
    data = bench_cli.json("list", "datasets", "--pattern", "*_zs")
    assert [r["key"] for r in data["datasets"]] == ["peta_zs", "rap_zs"]
    assert all(r["root"] == "(synthetic)" for r in data["datasets"])
    data = bench_cli.json("list", "--set", "data.market1501.root=/data/m")
    assert {r["key"]: r["root"] for r in data["datasets"]}["market1501"] == "/data/m"
    assert [p["name"] for p in data["profiles"]] == ["paper", "small", "smoke"]


def test_list_shows_registered_entries(bench_cli, workdir, registries):
    import adapters
    tasks, bbs = registries
    bbs.add("test_swin", object, arch="test", pretrain_method="random", semantic_controller=True)

    @adapters.register_task(adapters.TaskSpec(
        name="toy", version=3, title="Toy", paper="P", reference_code="R",
        datasets=("market1501",), metrics=(adapters.Metric("MR"), adapters.Metric("err", False))))
    class Toy:
        pass

    data = bench_cli.json("list")
    assert data["backbones"] == [{"name": "test_swin", "arch": "test", "pretrain": "random",
                                  "controller": True, "weights": "pretrain", "paper": ""}]
    assert data["tasks"][0]["metrics"] == ["MR ↑", "err ↓"]
    assert data["tasks"][0]["version"] == 3


def test_bad_config_is_one_line_error(bench_cli, workdir):
    (workdir / "bench.toml").write_text("[run]\nseed = 'x'\n")
    code, out, err = bench_cli("list")
    assert code == 2
    assert err.strip() == "error: bench.toml: run.seed: expected an integer, got 'x' (string)"
    assert "Traceback" not in err


def test_unknown_task_and_planned_task(bench_cli, workdir, registries):
    _, bbs = registries
    bbs.add("test_swin", object)
    code, _, err = bench_cli("run", "--backbone", "test_swin", "--tasks", "reid")
    assert code == 2 and "task 'reid' is not implemented yet (tracked in issue 7)" in err
    code, _, err = bench_cli("run", "--backbone", "test_swin", "--tasks", "bogus")
    assert code == 2 and "unknown task 'bogus'" in err
    code, _, err = bench_cli("run", "--backbone", "test_swin", "--tasks", " , ")
    assert code == 2 and "--tasks: empty list" in err
    code, _, err = bench_cli("run", "--lambda", "2")
    assert code == 2 and "λ must lie in [0, 1]" in err


def test_console_script_installed():
    exe = shutil.which("bench") or str(__import__("pathlib").Path(sys.executable).parent / "bench")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "hcbench" in out.stdout
    out = subprocess.run([exe, "list", "profiles", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {p["name"] for p in json.loads(out.stdout)["profiles"]} >= {"smoke", "paper"}


def test_perf_data(bench_cli, workdir):  # eval, backbone and e2e: tests/test_perf.py
    report = bench_cli.json("perf", "data", "--only", "market1501")
    stages = {r["stage"]: r for r in report["rows"]}
    assert stages["generate market1501"]["images"] == 376  # smoke: 170 train, 48 query, 158 gallery
    assert stages["decode+flip+normalise"]["images_per_s"] > 0
    saved = json.loads(open(report["saved"]).read())  # and in the results store
    assert saved["what"] == "data" and saved["report"]["rows"] == report["rows"]
    code, _, err = bench_cli("perf", "eval", "--only", "cuhk03")
    assert code == 2 and "unknown evaluation benchmark" in err


def test_analyze_semantics(bench_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = bench_cli.json("analyze", "semantics", "--backbone", "test_solider_swin", "--lambda",
                          "0,1", "--people", "4", "--out", "an",
                          "--set", 'backbones.test_solider_swin.weights="random"')
    rows = {r["lambda"]: r for r in data["rows"]}
    assert set(rows) == {0.0, 1.0}
    for r in rows.values():
        assert 0 <= r["intra_person_diff_parts"] <= 2 and 0 <= r["inter_person_same_part"] <= 2
    assert (tmp_path / "an" / "semantics.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = bench_cli("analyze", "semantics", "--backbone", "test_sup_swin", "--lambda", "0,1")
    assert code == 2 and "no semantic controller" in err


def test_eval_reads_the_world_of_the_profile_asked(bench_cli, workdir, tmp_path):
    """`bench eval --profile small` scores against the small world (the run's), not smoke's."""
    from bench import config
    from bench.data import synthetic_dir

    cfg = config.load()
    assert synthetic_dir(cfg).name.endswith("-smoke-seed0")
    assert synthetic_dir(cfg, "small").name.endswith("-small-seed0")
    pred = tmp_path / "p.npz"
    pred.write_bytes(b"")
    code, _, err = bench_cli("eval", "attribute", str(pred), "pa100k", "--profile", "nope")
    assert code == 2 and "unknown profile 'nope' (defined: paper, small, smoke)" in err
