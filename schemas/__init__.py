"""Pandera (polars) schemas: the validation rules of each dataset, one module per entity."""
