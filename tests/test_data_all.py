"""The whole smoke world: every dataset of the catalogue is written, read back by its reader
with every image decoded and no problem found, and drawn by `bench data show`."""
import time

import pytest

from bench.data import DATASETS, read_dataset, writer_of
from bench.data.base import Problems
from bench.data.show import contact_sheet
from bench.data.synth import world


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    t0 = time.time()
    manifest = world.make(out, "smoke", 0)
    return out, manifest, time.time() - t0


def test_every_writer_ran(smoke_world):
    _, manifest, seconds = smoke_world
    assert set(manifest["formats"]) == {name for name, _ in world.WRITERS}
    # the smoke world is meant to take seconds; a loose bound catches an accidental blow-up
    assert seconds < 120


@pytest.mark.parametrize("key", DATASETS.names())
def test_dataset_reads_back_clean_and_draws(smoke_world, key, tmp_path):
    out, manifest, _ = smoke_world
    spec = DATASETS.get(key).obj
    assert writer_of(key) in manifest["formats"]
    problems = Problems(strict=False, check_images=True)
    record = read_dataset(key, out / spec.folder, problems)
    assert problems.items == []
    png = contact_sheet(key, record, tmp_path / f"{key}.png", n=4)
    assert png.stat().st_size > 1000
