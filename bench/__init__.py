"""hcbench: an evaluation harness for human-centric vision backbones.

The library behind the ``bench`` command.  The CLI (:mod:`bench.cli`) only parses
arguments and calls into these modules:

- :mod:`bench.config`   bench.toml -> frozen, validated dataclasses
- :mod:`bench.registry` the decorator registry behind the backbone zoo and the task list
- :mod:`bench.data`     dataset catalogue, readers of the real formats, synthetic world
- :mod:`bench.runner`   ``bench run``: backbone x tasks -> metric rows in the results store
- :mod:`bench.results`  the results store and the published numbers, as tidy DataFrames
"""

__version__ = "0.1.0"
