"""Copy the fitted adapters of built recipe models into the package (sv_soar/recipe_adapters/), so that a fresh
machine merges them instead of fitting them (sv_soar.format_warm_start.shipped_adapter).

    SV_SOAR_BUILD_RECIPES=1 python scripts/ship_adapters.py MODEL [MODEL ...]

Each MODEL is a recipe model name (`<base>+<recipe>`, e.g. smollm2-135m-instruct+e1-format+mechanism-cue); it is
built from its recipe first where the cache lacks it (SV_SOAR_BUILD_RECIPES=1: fitted, not merged from an adapter
shipped before). A recipe model built on a recipe model ships both adapters. Commit the files it writes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from sv_soar import format_warm_start
from sv_soar.models import RECIPE_ADAPTER, resolve_model


def ship(name: str) -> list[Path]:
    """Ship `name`'s adapter and those of the recipe models it is built on: the files written."""
    split = format_warm_start.split_name(name)
    if split is None:
        raise SystemExit(f"{name!r} is not a recipe model (<base>+<recipe>)")
    written = ship(split[0]) if format_warm_start.split_name(split[0]) else []
    folder = Path(resolve_model(name, verify=True))
    built = json.loads((folder / "format_warm_start.json").read_text())
    if built.get("adapter") != "fitted":
        raise SystemExit(f"{folder} was merged from {built.get('adapter')}, not fitted: rebuild it with "
                         "SV_SOAR_BUILD_RECIPES=1 (remove the folder first)")
    format_warm_start.SHIPPED_ADAPTERS.mkdir(exist_ok=True)
    target = format_warm_start.SHIPPED_ADAPTERS / f"{folder.name}.safetensors"
    shutil.copyfile(folder / RECIPE_ADAPTER, target)
    return [*written, target]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    for path in dict.fromkeys(p for name in parser.parse_args(argv).models for p in ship(name)):  # bases once
        print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
