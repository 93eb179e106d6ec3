import dataclasses
import textwrap

import pytest

from bench import config
from bench.config import ConfigError


def write(tmp_path, text, name="bench.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_without_a_file(workdir):
    cfg = config.load()
    assert cfg.source == "<defaults>"
    assert cfg.run.backbone == "solider_swin_s" and cfg.run.tasks == ("all",)
    assert set(cfg.profiles) == {"smoke", "small", "paper"}
    assert cfg.profile().precision == "bf16"
    assert cfg.data.synthetic.seed == 0 and cfg.profile().synthetic_size == "smoke"
    assert cfg.results_dir == workdir / "results"


def test_repository_bench_toml_loads():
    from conftest import REPO_ROOT
    cfg = config.load(REPO_ROOT / "bench.toml")
    assert cfg.run.profile == "smoke" and cfg.profiles["smoke"].budget_minutes == 3.0
    assert cfg.results_dir == REPO_ROOT / "results"


def test_file_then_overrides_merge_key_by_key(tmp_path):
    p = write(tmp_path, """
        [run]
        seed = 5
        tasks = ["reid", "pose"]
        [profiles.smoke]
        budget_minutes = 7
        [profiles.mine]
        precision = "fp32"
        [data.market1501]
        root = "/data/market"
    """)
    cfg = config.load(p, ["run.seed=9", "run.profile=mine", "paths.results_dir=out"])
    assert cfg.run.seed == 9 and cfg.run.tasks == ("reid", "pose")
    assert cfg.run.profile == "mine" and cfg.profile().precision == "fp32"
    # the file changed one field of the built-in profile; the rest is inherited
    assert cfg.profiles["smoke"].budget_minutes == 7.0
    assert cfg.profiles["smoke"].precision == "bf16"
    assert cfg.data.datasets["market1501"].root == "/data/market"
    assert cfg.results_dir == tmp_path / "out"  # relative to the config file's folder


def test_config_is_frozen(workdir):
    cfg = config.load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 3
    with pytest.raises(TypeError):
        cfg.profiles["x"] = None


@pytest.mark.parametrize("text, message", [
    ("[run]\nsedd = 1\n", r"bench.toml: run.sedd: unknown key; did you mean 'seed'\?"),
    ("[runn]\nseed = 1\n", r"bench.toml: runn: unknown key; did you mean 'run'\?"),
    ("[run]\nseed = \"one\"\n", r"run.seed: expected an integer, got 'one' \(string\)"),
    ("[run]\nseed = 1.5\n", r"run.seed: expected an integer, got 1.5"),
    ("[run]\nseed = true\n", r"run.seed: expected an integer, got True \(boolean\)"),
    ("[run]\ntasks = \"reid\"\n", r"run.tasks: expected a list, got 'reid'"),
    ("[run]\ntasks = [1]\n", r"run.tasks\[0\]: expected a string, got 1"),
    ("[run]\ntasks = []\n", r"run.tasks: empty list"),
    ("[run]\nprofile = \"fast\"\n", r"run.profile: unknown profile 'fast' \(defined: paper, small, smoke\)"),
    ("[run]\nsemantic_weight = 1.5\n", r"run.semantic_weight: λ must lie in \[0, 1\], got 1.5"),
    ("[run]\nsemantic_weight = nan\n", r"run.semantic_weight: expected a finite number"),
    ("[run]\ndevice = \"gpu\"\n", r"run.device: expected auto, cpu, cuda or cuda:N"),
    ("run = 3\n", r"bench.toml: run: expected a table, got 3"),
    ("[profiles.smoke]\nprecision = \"fp16\"\n",
     r"profiles.smoke.precision: expected one of 'fp32', 'bf16', got 'fp16'"),
    ("[profiles.smoke]\nbudget_minutes = 0\n", r"profiles.smoke.budget_minutes: must be positive"),
    ("[profiles.x]\ncolour = 1\n", r"profiles.x.colour: unknown key"),
    ("[profiles.smoke]\nsynthetic_size = \"huge\"\n", r"profiles.smoke.synthetic_size: expected one of"),
    ("[data.synthetic]\nsize = \"small\"\n", r"data.synthetic.size: unknown key"),
    ("[data.market]\nroot = \"/x\"\n", r"data.market: unknown dataset name \(did you mean 'market1501'\?\)"),
    ("[data.market1501]\nrot = \"/x\"\n", r"data.market1501.rot: unknown key; did you mean 'root'\?"),
    ("[data]\nmarket1501 = \"/x\"\n", r"data.market1501: unknown key \(dataset tables look like"),
    ("[backbones.solider_swin_q]\nweights = \"random\"\n", r"backbones.solider_swin_q: unknown backbone name"),
    ("[tasks.reidd]\ndatasets = [\"market1501\"]\n", r"tasks.reidd: unknown task name"),
    ("[tasks.reid]\ndatasets = [\"market\"]\n", r"tasks.reid.datasets\[0\]: unknown dataset 'market'"),
    ("[tasks.reid.schedule.fast]\nepochs = 1\n", r"tasks.reid.schedule.fast: unknown profile"),
    ("[run\nseed = 1\n", r"bench.toml: invalid TOML: .*line 1"),
])
def test_validation_errors_name_file_and_key(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        config.load(p)


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        config.load(tmp_path / "nope.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"bin.toml: not UTF-8"):
        config.load(p)


@pytest.mark.parametrize("item, key, value", [
    ("run.seed=3", "run.seed", 3),
    ("run.tasks=[\"reid\", \"pose\"]", "run.tasks", ["reid", "pose"]),
    ("run.backbone=dino_swin_t", "run.backbone", "dino_swin_t"),
    ("run.semantic_weight=0.25", "run.semantic_weight", 0.25),
    ("paths.cache_dir = /tmp/x y", "paths.cache_dir", "/tmp/x y"),
])
def test_override_parsing(item, key, value):
    assert config.parse_override(item) == (key, value)


@pytest.mark.parametrize("item, message", [
    ("run.seed", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("run..seed=3", "expected KEY=VALUE"),
])
def test_bad_overrides(workdir, item, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [item])


def test_override_type_errors_and_table_clash(workdir):
    with pytest.raises(ConfigError, match=r"<defaults>: run.seed: expected an integer, got 'x'"):
        config.load(None, ["run.seed=x"])
    with pytest.raises(ConfigError, match=r"run.seed is a value, not a table"):
        config.load(None, ["run.seed=1", "run.seed.x=2"])


def test_resolved_config_round_trips(tmp_path):
    p = write(tmp_path, """
        [run]
        seed = 4
        semantic_weight = 0.3
        tasks = ["reid"]
        [profiles.mine]
        description = "quote \\" and backslash \\\\ ok"
        precision = "fp32"
        [data.lip]
        root = "/data/LIP"
    """)
    cfg = config.load(p, ["run.profile=mine"])
    text = config.dumps(cfg)
    again = config.load(write(tmp_path, text, "resolved.toml"))
    assert again == cfg
    assert config.to_dict(again) == config.to_dict(cfg)
