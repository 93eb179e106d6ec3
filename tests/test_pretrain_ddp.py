"""Two gloo processes on a CPU give the loss curve of one process on the same global batch."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from backbones.pretrain import profile_config, train


def _cfg():
    return profile_config("dino", "smoke", arch="test", epochs=2, batch_size=4, max_images=16,
                          global_size=(64, 32), local_size=(32, 16), n_local=2, out_dim=64,
                          head_hidden=32, head_bottleneck=16, drop_path=0.0, save_every=100)


def _worker(rank: int, world: int, port: int, out: str, cache: str) -> None:
    from bench import config as config_mod

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        train(_cfg(), out, config_mod.load(None, [f'paths.cache_dir="{cache}"']), device="cpu")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path):
    from bench import config as config_mod

    cache = str(tmp_path / "cache")
    torch.set_num_threads(1)
    train(_cfg(), tmp_path / "one", config_mod.load(None, [f'paths.cache_dir="{cache}"']),
          device="cpu")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), cache), nprocs=2, join=True)
    one, two = _losses(tmp_path / "one" / "log.jsonl"), _losses(tmp_path / "two" / "log.jsonl")
    assert len(one) == len(two) == 8
    for a, b in zip(one, two):
        assert a["lr"] == b["lr"]
        for k in ("loss", "teacher_entropy", "kl"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (a["step"], k)
