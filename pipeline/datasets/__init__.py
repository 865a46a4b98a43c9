"""Datasets are plug-ins: each module describes its input, rules, hash, tables and SQL
(``pipeline.datasets.base``); this registry is the one place that lists them."""

from __future__ import annotations

from pipeline.datasets.base import Dataset
from pipeline.errors import ConfigError


def all_datasets() -> tuple[Dataset, ...]:
    from pipeline.datasets import memories, messages

    return memories.DATASET, messages.DATASET


def dataset_names() -> list[str]:
    return [d.name for d in all_datasets()]


def get_dataset(name: str) -> Dataset:
    registry = {d.name: d for d in all_datasets()}
    if name not in registry:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]
