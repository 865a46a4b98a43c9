"""The ``pipeline`` command (also ``python -m pipeline``)."""

import os


def main() -> None:
    # The pipeline keeps both cores busy with threads of its own (reading, looking up,
    # loading) over frames of one batch each; Polars splitting such small frames across its
    # own pool costs more CPU than it wins (1M records: 1.3 s faster with one Polars thread).
    # Set before Polars is first imported; an explicit POLARS_MAX_THREADS wins.
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    from pipeline.cli import main as run_command

    run_command()


if __name__ == "__main__":
    main()
