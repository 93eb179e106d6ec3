"""Fuzzing bench.toml: whatever the file holds, loading either works or raises ConfigError with
a one-line message naming the file; never another exception, never a traceback."""
import random

import pytest

from bench import config
from conftest import REPO_ROOT

BASE = (REPO_ROOT / "bench.toml").read_text()
VALUES = ["1", "-3", "0.5", "1e309", "nan", "true", '"x"', '""', "[]", "[1, 2]", '["reid"]',
          "{}", '{a = 1}', "2026-01-01", '"\\u00e9"', '"../../etc"', "'lit'"]
KEYS = ["run", "run.seed", "run.tasks", "run.profile", "run.semantic_weight", "run.device",
        "paths.cache_dir", "data.synthetic.seed", "data.market1501.root", "profiles.smoke.precision",
        "profiles.smoke.budget_minutes", "profiles.x.synthetic_size", "tasks.reid.datasets",
        "tasks.reid.schedule.smoke.epochs", "backbones.solider_swin_s.weights", "bogus", "run.bogus"]


def mutate(text: str, rng: random.Random) -> str:
    kind = rng.randrange(5)
    lines = text.splitlines()
    if kind == 0:  # a random value for a random (dotted) key, at the top or the end
        line = f"{rng.choice(KEYS)} = {rng.choice(VALUES)}\n"
        return line + text if rng.random() < 0.5 else text + "\n" + line
    if kind == 1:  # a table with a random key/value
        key = rng.choice(KEYS)
        table, _, leaf = key.rpartition(".")
        return text + (f"\n[{table}]\n{leaf} = {rng.choice(VALUES)}\n" if table else
                       f"\n{leaf} = {rng.choice(VALUES)}\n")
    if kind == 2:  # delete a random character
        i = rng.randrange(len(text))
        return text[:i] + text[i + 1:]
    if kind == 3:  # duplicate a random line
        i = rng.randrange(len(lines))
        return "\n".join(lines[:i + 1] + lines[i:])
    return text.replace("=", rng.choice(["==", ":", "= =", "="]), 1)  # break an assignment


@pytest.mark.parametrize("seed", range(300))
def test_mutated_config_loads_or_fails_cleanly(tmp_path, seed):
    rng = random.Random(seed)
    text = BASE
    for _ in range(rng.randint(1, 3)):
        text = mutate(text, rng)
    p = tmp_path / "bench.toml"
    p.write_text(text)
    try:
        cfg = config.load(p)
    except config.ConfigError as e:
        msg = str(e)
        assert msg.startswith(str(p)) and "\n" not in msg and "Traceback" not in msg
    else:
        assert isinstance(cfg, config.Config)
