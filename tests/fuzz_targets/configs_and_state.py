"""Fuzz targets for what a run reads from disk and the command line: experiment configs, overrides,
JSONL files, a run folder's state and its reward cache."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz_targets._common import JSON_VALUES, NASTY, _check_file_reader, _mangled, _reason, fuzz_target

# --------------------------------------------------------------------------------- experiment configs

_SECTION_KEYS = {
    "run": ["method", "seed", "outer_steps"],
    "data": ["task", "hard_set"],
    "teacher": ["model", "g", "n", "temperature", "max_new_tokens", "learning_rate", "lora_target_modules"],
    "student": ["model", "steps", "batch_prompts", "group_size", "learning_rate", "lr_schedule"],
    "soar": ["students", "q_r", "tau", "window", "grounding", "floor", "time_limit_s"],
    "evaluation": ["seeds", "samples", "steps", "extra_eval"],
}
_TOML_SCALARS = (st.integers(-(2**63), 2**63 - 1) | st.floats() | st.booleans()
                 | st.text(max_size=20) | st.sampled_from(["soar", "e1", "hs", "rloo", "cosine", "\x00", "~nobody/x"]))
_TOML_VALUES = _TOML_SCALARS | st.lists(_TOML_SCALARS, max_size=3)


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
        return json.dumps(v) if isinstance(v, str) else str(v)

    return "".join(f"[{json.dumps(name)}]\n" + "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in body.items())
                   for name, body in sections.items())


def _config_texts() -> st.SearchStrategy[str]:
    key = st.sampled_from(sorted({k for keys in _SECTION_KEYS.values() for k in keys}) + ["typo", ""])
    section = st.sampled_from([*_SECTION_KEYS, "extra"])
    body = st.dictionaries(key, _TOML_VALUES, max_size=5)
    near_valid = st.dictionaries(section, body, max_size=5).map(
        lambda s: {"data": {"hard_set": "hs"}, **s}).map(_toml)
    one_key = st.sampled_from([(s, k) for s, keys in _SECTION_KEYS.items() for k in keys]).flatmap(
        lambda sk: _TOML_VALUES.map(lambda v: _toml({"data": {"hard_set": "hs"}} | {sk[0]: {
            **({"hard_set": "hs"} if sk[0] == "data" else {}), sk[1]: v}})))  # a valid config, one key changed
    return st.one_of(near_valid, one_key, st.text(max_size=200), st.lists(NASTY | st.sampled_from(["[run]", "a = 1", "=", "\n"]),
                                                                 max_size=20).map("".join))


@fuzz_target("config", "experiment configs, TOML (sv_soar.config.load_config)", _config_texts,
             examples=('[data]\nhard_set = "a\\u0000b"\n', 'a = ' + '[' * 3000))  # NUL in a path; deep nesting
def check_config(text: str) -> str:
    from sv_soar.config import ConfigError, RunConfig, load_config

    return _check_file_reader(text, "fuzz.toml", load_config, ConfigError, RunConfig, "config_error")


def _override_items() -> st.SearchStrategy[list[str]]:
    dotted = st.lists(st.sampled_from([*_SECTION_KEYS, "q_r", "soar.q_r", "x", ""]), min_size=1, max_size=3).map(".".join)
    value = _TOML_SCALARS.map(lambda v: json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else "nan")
    item = st.builds(lambda k, v, sep: f"{k}{sep}{v}", dotted, value | st.text(max_size=10), st.sampled_from(["=", ""]))
    return st.lists(item, max_size=4)


@fuzz_target("config-overrides", "`sv-soar train --set KEY=VALUE` overrides (commands.train._override, apply_overrides)",
             _override_items)
def check_config_overrides(items: list[str]) -> str:
    from sv_soar.config import ConfigError, apply_overrides, parse_config
    from sv_soar.commands.train import _override

    try:
        overrides = dict(_override(item) for item in items)
        parse_config(apply_overrides({"data": {"hard_set": "hs"}}, overrides), origin="<fuzz>")
    except ConfigError as exc:
        _reason(exc)
        return "rejected:config_error"
    return "accepted"


# --------------------------------------------------------------------------------- JSONL files


def _jsonl_bytes() -> st.SearchStrategy[bytes]:
    row = st.fixed_dictionaries({"question": st.text(max_size=30) | JSON_VALUES,
                                 "answer": st.sampled_from(["Malicious", "Benign", "benign"]) | JSON_VALUES},
                                optional={"meta": JSON_VALUES, "prompt": st.text(max_size=10)})
    line = st.one_of(row.map(lambda r: json.dumps(r, allow_nan=True).encode()), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=40), st.sampled_from([b"", b"   ", b"\xff\xfe", b"[" * 3000 + b"]" * 3000,
                                                              b'{"question": "q", "answer": "Benign"', b"\r"]))
    return st.lists(line, max_size=8).map(lambda lines: b"\n".join(lines))


@fuzz_target("jsonl", "JSONL datasets and hard sets (sv_soar.jsonl.read_jsonl with the E1 row validator)", _jsonl_bytes,
             examples=(b"[" * 3000 + b"]" * 3000, b'{"question": "q", "answer": "Benign", "meta": ' + b"[" * 5000))
def check_jsonl(data: bytes) -> str:
    from sv_soar.jsonl import JsonlError, JsonlReport, read_jsonl
    from sv_soar.tasks.e1 import validate_row

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(data)
        report = JsonlReport()
        kept = read_jsonl(path, validate_row, skip_bad=True, report=report, max_line_bytes=8192)
        for line in report.skipped:
            _reason(line, where=f"{path}:")
        try:
            rows = read_jsonl(path, validate_row, max_line_bytes=8192)
        except JsonlError as exc:
            _reason(exc, where=f"{path}:")
            assert report.skipped, "strict reading failed where skip_bad skipped nothing"
            return "rejected:jsonl_error"
        assert rows == kept and not report.skipped
        return "accepted"


# --------------------------------------------------------------------------------- run folder state


def _state_texts() -> st.SearchStrategy[str]:
    valid = {"format": "sv-soar-promotion", "version": 1, "task": "e1", "model": "m", "window": 3, "tau": 0.01,
             "step": 0, "history": [], "baseline": {"name": "base", "id": "base", "folder": None},
             "promoted_datasets": [], "promotions": 0, "last_promotion_step": None}
    mutated = st.builds(lambda k, v: json.dumps({**valid, k: v}, allow_nan=True), st.sampled_from(sorted(valid) + ["x"]),
                        JSON_VALUES)
    return _mangled(mutated | JSON_VALUES.map(json.dumps)) | st.just(json.dumps(valid)) | st.just("[" * 5000)


@fuzz_target("promotion-state", "a run folder's state.json (sv_soar.promotion_run.load_state)", _state_texts,
             examples=("[" * 5000,))
def check_promotion_state(text: str) -> str:
    from sv_soar.promotion import PromotionState
    from sv_soar.promotion_run import PromotionStateError, load_state

    return _check_file_reader(text, "state.json", load_state, PromotionStateError, PromotionState, "state_error")


def _cache_texts() -> st.SearchStrategy[str]:
    student = {"seed": 1, "accuracy": 0.5, "reward": 0.25, "failure": None, "seconds_train": 1.0, "log": []}
    valid = {"reward": 0.25, "baseline_accuracy": 0.25, "students": [student], "error": None, "cached": False,
             "key": "k", "seconds": {"train": 1.0}, "n_failed": 0}
    mutated = st.builds(lambda k, v: json.dumps({**valid, k: v}, allow_nan=True), st.sampled_from(sorted(valid)), JSON_VALUES)
    mutated_student = st.builds(lambda k, v: json.dumps({**valid, "students": [{**student, k: v}]}, allow_nan=True),
                                st.sampled_from(sorted(student)), JSON_VALUES)
    return st.one_of(st.just(json.dumps(valid)), mutated, mutated_student, _state_texts())


@fuzz_target("reward-cache-entry", "a reward-cache entry on disk (RewardCache.get, DatasetScore.from_dict)", _cache_texts,
             examples=("{" * 5000, '{"a": ' + "[" * 5000,
                       '{"reward": null, "baseline_accuracy": 0, "students": [{"seed": 1, "accuracy": null, "reward": null, '
                       '"failure": "x", "seconds_train": 1' + "0" * 400 + ', "log": []}], "error": "x", "key": "k", '
                       '"seconds": {}}'))  # a float() overflow
def check_reward_cache_entry(text: str) -> str:
    from sv_soar.reward_cache import CACHE_VERSION, RewardCache

    key = "ab" + "0" * 62
    with tempfile.TemporaryDirectory() as folder:
        cache = RewardCache(folder)
        path = Path(folder) / key[:2] / f"{key}.json"
        path.parent.mkdir()
        try:  # some inputs get the right key and version, so the entry's body is what is fuzzed
            value = json.loads(text)
            if isinstance(value, dict):
                text = json.dumps({**value, "key": key, "version": CACHE_VERSION}, allow_nan=True)
        except (ValueError, RecursionError):
            pass
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        if cache.get(key) is None:  # unreadable: None (logged), recomputed by the scorer
            return "rejected:unreadable"
        # the scorer's own read of an entry (GroundedScorer._cached needs only .cache): a malformed body is
        # logged and recomputed, a readable one becomes a DatasetScore
        from types import SimpleNamespace

        from sv_soar.grounded import DatasetScore, GroundedScorer

        score = GroundedScorer._cached(SimpleNamespace(cache=cache), key, False)
        if score is None:
            return "rejected:malformed"
        assert isinstance(score, DatasetScore) and score.cached

        def number(value: Any, optional: bool = True) -> bool:
            if value is None:
                return optional
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        # what the outer loop computes with: R_k, R_kj, accuracies, failures (promotion refuses NaN)
        assert number(score.reward) and number(score.baseline_accuracy, optional=False), score
        assert score.error is None or isinstance(score.error, str)
        for s in score.students:
            assert number(s.reward) and number(s.accuracy) and isinstance(s.seed, int), s
            assert s.failure is None or isinstance(s.failure, str)
            assert (s.failure is None) == (s.reward is not None), s  # a student either finished or failed
        return "accepted"
