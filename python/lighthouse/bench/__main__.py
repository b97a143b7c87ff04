"""Entry point of ``python -m lighthouse.bench``."""

from lighthouse.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
