"""The data layer: the catalogue of benchmark datasets, their on-disk readers and the synthetic world.

``DATASETS`` (from :mod:`bench.data.catalog`) names every dataset the harness knows, with
the task it serves and the folder name it ships under.  Readers of the real on-disk formats
and the synthetic world that writes them arrive with the data-layer issue; until then a
catalogue entry says so (``reader`` is ``None``).
"""
from bench.data.catalog import DATASETS, DatasetSpec, dataset_spec

__all__ = ["DATASETS", "DatasetSpec", "dataset_spec"]
