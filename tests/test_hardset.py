"""Fail@K hard-set mining: numbers from hand-made matrices, the split, the files, vf-eval results, the CLI."""

from __future__ import annotations

import http.server
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sv_soar.evaluation.cold_start_report import OVERALL
from sv_soar.evaluation.hardset import (
    cold_start_ks,
    hard_set_indices,
    mine_hard_set,
    row_hash,
    split_hard_set,
    zero_pass_fraction,
    zero_pass_table,
)
from sv_soar.evaluation.saved_results import load_eval_results
from sv_soar.jsonl import JsonlError, read_jsonl
from sv_soar.tasks import Task

REPO = Path(__file__).resolve().parents[1]

TOY_TASK = Task(
    name="toy",
    system_prompt="Answer ok.",
    score=lambda text, row: {"reward": float(text == "ok")},
    is_success=lambda text, row: text == "ok",
    breakdown=lambda row: row["meta"]["group"],
    validate_row=lambda row: row,
)

# 4 problems x 4 samples; True = solved
MATRIX = np.array(
    [
        [False, False, False, True],  # first success at sample 4
        [True, False, False, False],  # first success at sample 1
        [False, False, False, False],  # never: the only fail@4 problem
        [False, True, False, False],  # first success at sample 2
    ]
)
GROUPS = ["a", "a", "b", "b"]


def toy_rows(n: int, groups=None) -> list[dict]:
    return [
        {"question": f"problem {i}", "answer": "ok", "meta": {"group": (groups or ["g"] * n)[i], "idx": i}}
        for i in range(n)
    ]


# --- numbers ------------------------------------------------------------------------------------


def test_zero_pass_fraction_by_hand():
    assert zero_pass_fraction(MATRIX, 1) == 0.75  # rows 0, 2, 3 miss sample 1
    assert zero_pass_fraction(MATRIX, 2) == 0.5  # rows 0, 2
    assert zero_pass_fraction(MATRIX, 3) == 0.5
    assert zero_pass_fraction(MATRIX, 4) == 0.25  # row 2 only
    with pytest.raises(ValueError):
        zero_pass_fraction(MATRIX, 5)
    assert hard_set_indices(MATRIX) == [2]


def test_zero_pass_table_breaks_down_by_group():
    table, sizes = zero_pass_table(MATRIX, GROUPS, [1, 2, 4])
    assert list(table) == [OVERALL, "a", "b"]
    assert table[OVERALL] == {1: 0.75, 2: 0.5, 4: 0.25}
    assert table["a"] == {1: 0.5, 2: 0.5, 4: 0.0}
    assert table["b"] == {1: 1.0, 2: 0.5, 4: 0.5}
    assert sizes == {OVERALL: 4, "a": 2, "b": 2}
    # groups are listed largest first
    table, sizes = zero_pass_table(MATRIX, ["z", "y", "y", "y"], [1])
    assert list(table) == [OVERALL, "y", "z"]


def test_cold_start_ks():
    assert cold_start_ks(1) == [1]
    assert cold_start_ks(4) == [1, 4]  # S itself: the K of the hard set
    assert cold_start_ks(16) == [1, 8, 16]
    assert cold_start_ks(100) == [1, 8, 16, 32, 64, 100]
    assert cold_start_ks(128) == [1, 8, 16, 32, 64, 128]


# --- the D_train / D_test split -----------------------------------------------------------------


def test_split_is_50_50_and_covers_the_hard_set():
    for n in (0, 1, 2, 7, 10, 11):
        rows = toy_rows(n)
        train, test = split_hard_set(rows, seed=0)
        assert len(train) == (n + 1) // 2 and len(test) == n // 2
        assert sorted(r["meta"]["idx"] for r in train + test) == list(range(n))


def test_split_is_stable_for_a_seed_whatever_the_input_order():
    rows = toy_rows(11)
    train, test = split_hard_set(rows, seed=3)
    for shuffle_seed in range(5):
        shuffled = rows[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        assert split_hard_set(shuffled, seed=3) == (train, test)
    assert split_hard_set(rows, seed=4) != (train, test)
    # a content hash, not meta, identifies a problem
    assert row_hash(rows[0]) == row_hash({**rows[0], "meta": {"other": 1}})
    assert row_hash(rows[0]) != row_hash(rows[1])


# --- writing a hard set and its report ----------------------------------------------------------


def test_mine_hard_set_writes_rows_successes_and_report(tmp_path):
    matrix = np.zeros((10, 8), dtype=bool)
    matrix[0, 0] = matrix[1, 7] = matrix[2, 3] = matrix[5, 1] = True  # 6 problems never solved
    groups = ["S0"] * 6 + ["OTH"] * 4
    rows = toy_rows(10, groups)
    mined = mine_hard_set(
        TOY_TASK, rows, matrix, tmp_path, model="tiny", source="test rows", temperature=1.0, seed=0, command="cmd x"
    )
    names = sorted(p.name for p in mined.files)
    assert names == sorted(
        ["hard_set.jsonl", "d_train.jsonl", "d_test.jsonl", "successes.jsonl", "cold_start_report.md", "cold_start.png"]
    )
    hard = read_jsonl(tmp_path / "hard_set.jsonl")
    assert [r["meta"]["idx"] for r in hard] == [3, 4, 6, 7, 8, 9]
    train, test = read_jsonl(tmp_path / "d_train.jsonl"), read_jsonl(tmp_path / "d_test.jsonl")
    assert len(train) == len(test) == 3
    assert sorted(r["meta"]["idx"] for r in train + test) == [3, 4, 6, 7, 8, 9]
    for row in hard:  # SV-Bench rows, meta kept and extended
        assert set(row) == {"question", "answer", "meta"}
        assert row["meta"]["group"] in ("S0", "OTH")
        fail = row["meta"]["fail_at_k"]
        assert fail["successes"] == 0 and fail["samples"] == 8 and fail["model"] == "tiny"
        assert fail["split"] in ("d_train", "d_test")
    assert {r["question"] for r in train} == {r["question"] for r in hard if r["meta"]["fail_at_k"]["split"] == "d_train"}
    assert "fail_at_k" not in rows[3]["meta"]  # the caller's rows are not modified

    successes = read_jsonl(tmp_path / "successes.jsonl")
    assert len(successes) == 10
    assert successes[5]["successes"] == [False, True] + [False] * 6 and successes[5]["solved"] == 1
    assert successes[5]["hash"] == row_hash(rows[5]) and successes[5]["group"] == "S0"

    report = mined.report
    assert report.zero_pass[OVERALL] == {1: 0.9, 8: 0.6}
    assert report.zero_pass["S0"] == {1: 5 / 6, 8: 2 / 6}  # rows 0..5: row 0 solves at K=1; 3, 4 never
    assert report.zero_pass["OTH"] == {1: 1.0, 8: 1.0}
    assert report.pass_at_k[1] == pytest.approx(4 / 80)

    text = (tmp_path / "cold_start_report.md").read_text()
    assert "| **overall** | 10 | 90.0% | 60.0% |" in text
    assert "| S0 | 6 | 83.3% | 33.3% |" in text
    assert "hard set D (0/8 solved): 6" in text and "D_train: 3, D_test: 3" in text
    assert "pass@1" in text and "pass@4" in text and "pass@8" in text and "pass@16" not in text
    assert "cmd x" in text

    png = tmp_path / "cold_start.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


# --- saved evaluation results -------------------------------------------------------------------

E1_QUESTIONS = [
    "Device unknown-device observed tcp 43750→23, duration 3.107256, bytes ?, flags [S]. "
    "Decide: Malicious or Benign (you may Abstain if unsure).",
    "Device unknown-device observed tcp 6662→62336, duration ?, bytes ?, flags [C]. "
    "Decide: Malicious or Benign (you may Abstain if unsure).",
    "Device unknown-device observed udp 5353→5353, duration 0.5, bytes 120, flags []. "
    "Decide: Malicious or Benign (you may Abstain if unsure).",
    "Device unknown-device observed tcp 18371→81, duration ?, bytes ?, flags [S]. "
    "Decide: Malicious or Benign (you may Abstain if unsure).",
]
E1_ROWS = [
    {"question": E1_QUESTIONS[0], "answer": "Malicious", "meta": {"scenario": "S0", "attack_family": "NA"}},
    {"question": E1_QUESTIONS[1], "answer": "Malicious", "meta": {"scenario": "OTH", "attack_family": "NA"}},
    {"question": E1_QUESTIONS[2], "answer": "Benign", "meta": {"scenario": "SF", "attack_family": "NA"}},
    {"question": E1_QUESTIONS[3], "answer": "Malicious", "meta": {"scenario": "S0", "attack_family": "NA"}},
]
# how many of each question's 4 rollouts the canned model gets right
CORRECT_OF_4 = {E1_QUESTIONS[0]: 4, E1_QUESTIONS[1]: 1, E1_QUESTIONS[2]: 0, E1_QUESTIONS[3]: 0}


class CannedChatServer:
    """An OpenAI-compatible /v1/chat/completions endpoint with scripted answers.

    vf-eval talks to a model through such an endpoint; this one stands in for the model so that the
    rollouts' correctness is known. Everything else (the environment, rubric, rollout serialisation
    and results.jsonl writing) is verifiers' own code.
    """

    def __init__(self, correct_of_4: dict[str, int], answers: dict[str, str]):
        self.calls: dict[str, int] = {}
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with lock:
                    seen = outer.calls.get(question, 0)
                    outer.calls[question] = seen + 1
                right = answers[question]
                wrong = "Benign" if right == "Malicious" else "Malicious"
                label = right if seen < correct_of_4[question] else wrong
                text = json.dumps({"label": label, "confidence": 0.8})
                payload = json.dumps(
                    {
                        "id": f"chatcmpl-{seen}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def run_vf_eval(results_dir: Path, rollouts_per_example: int = 4) -> Path:
    """`vf-eval -s` in-process: an SV-Bench-E1-like SingleTurnEnv, rubric named as SV-Bench names it."""
    import verifiers as vf
    from datasets import Dataset
    from openai import AsyncOpenAI

    from sv_soar.tasks.e1 import E1_TASK

    def reward_accuracy(completion, answer, **kwargs) -> float:
        """1.0 when the label equals the answer (SV-Bench sv_shared.reward_accuracy)."""
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        return float(E1_TASK.is_success(text, {"question": "", "answer": answer, "meta": {}}))

    # vf-eval keeps prompt, answer and info; SV-Bench's meta does not reach results.jsonl
    dataset = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in E1_ROWS])
    env = vf.SingleTurnEnv(
        dataset=dataset,
        system_prompt=E1_TASK.system_prompt,
        rubric=vf.Rubric(funcs=[reward_accuracy], weights=[1.0]),
    )
    answers = {r["question"]: r["answer"] for r in E1_ROWS}
    with CannedChatServer(CORRECT_OF_4, answers) as server:
        client = AsyncOpenAI(base_url=server.url, api_key="local")
        try:  # verifiers >= 0.1.10 wraps the OpenAI client
            from verifiers.clients.openai_chat_completions_client import OpenAIChatCompletionsClient

            client = OpenAIChatCompletionsClient(client)
        except ImportError:
            pass
        env.evaluate_sync(
            client=client,
            model="canned-model",
            num_examples=len(E1_ROWS),
            rollouts_per_example=rollouts_per_example,
            sampling_args={"temperature": 1.0},
            save_results=True,
            results_path=results_dir,
        )
    return results_dir / "results.jsonl"


@pytest.fixture(scope="module")
def vf_results(tmp_path_factory) -> Path:
    return run_vf_eval(tmp_path_factory.mktemp("vf-eval") / "run")


def test_vf_eval_results_format_is_what_the_reader_expects(vf_results):
    records = read_jsonl(vf_results)
    assert len(records) == 16
    record = records[0]
    assert {"example_id", "prompt", "completion", "answer", "reward", "metrics"} <= set(record)
    assert record["prompt"][-1]["role"] == "user" and record["completion"][-1]["role"] == "assistant"
    assert "reward_accuracy" in record["metrics"]
    assert json.loads((vf_results.parent / "metadata.json").read_text())["model"] == "canned-model"


def test_from_results_mines_the_hard_set(vf_results, tmp_path):
    from sv_soar.cli import main

    out = tmp_path / "out"
    assert main(["hardset", "--task", "e1", "--from-results", str(vf_results), "--out", str(out)]) == 0
    successes = {r["question"]: r["solved"] for r in read_jsonl(out / "successes.jsonl")}
    assert successes == CORRECT_OF_4
    hard = read_jsonl(out / "hard_set.jsonl")
    assert {r["question"] for r in hard} == {E1_QUESTIONS[2], E1_QUESTIONS[3]}
    assert {r["question"]: r["answer"] for r in hard} == {E1_QUESTIONS[2]: "Benign", E1_QUESTIONS[3]: "Malicious"}
    assert len(read_jsonl(out / "d_train.jsonl")) == len(read_jsonl(out / "d_test.jsonl")) == 1
    report = (out / "cold_start_report.md").read_text()
    assert "canned-model" in report and "| temperature | 1.0 |" in report
    assert "success from: reward_accuracy" in report
    # K=4: 2 of 4 never solved; K=1 depends on where q1's one success landed (rollouts finish in any order)
    first_solved = sum(r["successes"][0] for r in read_jsonl(out / "successes.jsonl"))
    assert f"| **overall** | 4 | {100 * (4 - first_solved) / 4:.1f}% | 50.0% |" in report


def test_from_results_restores_meta_from_the_data_file(vf_results, tmp_path):
    from sv_soar.cli import main
    from sv_soar.jsonl import write_jsonl

    data = write_jsonl(tmp_path / "e1.jsonl", E1_ROWS)
    out = tmp_path / "out"
    argv = ["hardset", "--from-results", str(vf_results), "--source", "jsonl", "--path", str(data), "--out", str(out)]
    assert main(argv) == 0
    hard = read_jsonl(out / "hard_set.jsonl")
    assert {r["meta"]["scenario"] for r in hard} == {"SF", "S0"}
    from sv_soar.tasks.e1 import E1_TASK

    groups = {r["group"] for r in read_jsonl(out / "successes.jsonl")}
    assert groups == {E1_TASK.breakdown(r) for r in E1_ROWS}


def test_from_results_rescored_without_the_metric(vf_results, tmp_path):
    # results of an environment without SV-Bench's accuracy metric: re-scored with task.is_success, when asked
    from sv_soar.tasks.e1 import E1_TASK

    stripped = tmp_path / "results.jsonl"
    with stripped.open("w") as handle:
        for record in read_jsonl(vf_results):
            record.pop("reward_accuracy")
            record["metrics"].pop("reward_accuracy")
            handle.write(json.dumps(record) + "\n")
    with pytest.raises(JsonlError, match="no success metric 'reward_accuracy'.*--rescore"):
        load_eval_results([stripped], E1_TASK)
    results = load_eval_results([stripped], E1_TASK, rescore=True)
    assert results.success_from == {"task.is_success"}
    assert {r["question"]: sum(o) for r, o in zip(results.rows, results.outcomes)} == CORRECT_OF_4


def test_from_results_reads_svbench_script_output(tmp_path):
    # SV-Bench scripts/eval_network_logs.py: one record a question, question text as the prompt,
    # rewards in a dict, completion_error on a failed call; several runs add up by question.
    from sv_soar.cli import main

    run_dirs = []
    for run in range(3):
        run_dir = tmp_path / "outputs" / "evals" / "sv-env-network-logs--gpt-x" / f"run{run}"
        run_dir.mkdir(parents=True)
        (run_dir / "metadata.json").write_text(json.dumps({"model": "gpt-x", "temperature": 0.2}))
        with (run_dir / "results.jsonl").open("w") as handle:
            for i, row in enumerate(E1_ROWS):
                solved = run < CORRECT_OF_4[row["question"]]
                record = {
                    "index": i,
                    "prompt": row["question"],
                    "answer": row["answer"],
                    "completion": json.dumps({"label": row["answer"] if solved else "Abstain", "confidence": 0.5}),
                    "rewards": {"reward_accuracy": float(solved), "format_reward": 1.0},
                }
                handle.write(json.dumps(record) + "\n")
            errored = {"index": 9, "prompt": E1_ROWS[0]["question"], "answer": "Malicious", "completion": "",
                       "completion_error": "rate limited", "rewards": {"reward_accuracy": 0.0}}
            handle.write(json.dumps(errored) + "\n")
        run_dirs.append(run_dir)
    out = tmp_path / "out"
    pattern = str(tmp_path / "outputs" / "evals" / "*" / "*" / "results.jsonl")
    assert main(["hardset", "--from-results", pattern, "--out", str(out)]) == 0
    solved = {r["question"]: r["solved"] for r in read_jsonl(out / "successes.jsonl")}
    assert solved == {q: min(c, 3) for q, c in CORRECT_OF_4.items()}
    report = (out / "cold_start_report.md").read_text()
    assert "gpt-x" in report and "| temperature | 0.2 |" in report
    assert "3 rollouts with an error were not counted" in report


def test_from_results_bad_line_names_file_and_line(vf_results, tmp_path):
    from sv_soar.tasks.e1 import E1_TASK

    bad = tmp_path / "results.jsonl"
    lines = vf_results.read_text().splitlines()
    record = json.loads(lines[1])
    del record["prompt"]
    bad.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    with pytest.raises(JsonlError, match=rf"^{bad}:2: no 'prompt'"):
        load_eval_results([bad], E1_TASK)
    record = json.loads(lines[0])
    record["metrics"]["reward_accuracy"] = "yes"
    record.pop("reward_accuracy")
    bad.write_text(json.dumps(record) + "\n")
    with pytest.raises(JsonlError, match=rf"^{bad}:1: metric 'reward_accuracy' is 'yes'"):
        load_eval_results([bad], E1_TASK)


def test_from_results_missing_file_is_a_clear_error(tmp_path):
    from sv_soar.cli import main

    with pytest.raises(SystemExit, match="no file matches"):
        main(["hardset", "--from-results", str(tmp_path / "nothing" / "*.jsonl"), "--out", str(tmp_path / "o")])


# --- end to end: sv-soar hardset as a real subprocess with the tiny model ------------------------


@pytest.mark.slow
def test_hardset_cli_end_to_end_with_the_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "cold"
    command = [
        sys.executable, "-m", "sv_soar.cli", "hardset",
        "--task", "e1", "--model", str(tiny_model_dir), "--source", "builtin", "--n", "8",
        "--samples", "4", "--max-new-tokens", "24", "--seed", "0", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hard set D (0/4)" in done.stdout and "zero-pass: K=1" in done.stdout

    successes = read_jsonl(out / "successes.jsonl")
    assert len(successes) == 8 and all(len(r["successes"]) == 4 for r in successes)
    hard = read_jsonl(out / "hard_set.jsonl")
    assert len(hard) == sum(1 for r in successes if r["solved"] == 0)
    train, test = read_jsonl(out / "d_train.jsonl"), read_jsonl(out / "d_test.jsonl")
    assert len(train) == (len(hard) + 1) // 2 and len(test) == len(hard) // 2
    from sv_soar.tasks.e1 import E1_TASK

    for row in hard:  # still valid SV-Bench E1 rows
        E1_TASK.validate_row(row)
        assert row["meta"]["fail_at_k"]["samples"] == 4
    report = (out / "cold_start_report.md").read_text()
    assert str(tiny_model_dir) in report and "--samples 4" in report
    assert (out / "cold_start.png").read_bytes()[:4] == b"\x89PNG"


def test_problems_longer_than_the_context_window_are_left_out_and_named(tiny_model_dir):
    """A prompt the model cannot read whole (the E2 mini set has a ~20k-token config against SmolLM2's
    8k window) is not sampled: it would cost time quadratic in its length and mean nothing."""
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.commands.hardset import _fitting_rows
    from sv_soar.evaluation.hardset import row_hash
    from sv_soar.tasks.e1 import E1_TASK
    from sv_soar.tasks.e1.flows import generate_e1_flows

    engine = TransformersEngine(str(tiny_model_dir))
    assert engine.context_window == 1024  # tests/tiny_llama.py's max_position_embeddings
    rows = generate_e1_flows(3, seed=1)
    long = {**rows[1], "question": rows[1]["question"] + " flags [S, A]" * 400}
    kept, unreadable = _fitting_rows(engine, E1_TASK, [rows[0], long, rows[2]], max_new_tokens=24)
    assert kept == [rows[0], rows[2]]
    (named,) = unreadable
    assert named.startswith(row_hash(long)) and int(named.split("(")[1].split()[0]) > 1000
    # the answer's tokens count against the window too
    fits = engine.count_tokens(E1_TASK.prompt(rows[0]))
    assert _fitting_rows(engine, E1_TASK, rows[:1], max_new_tokens=1024 - fits + 1)[0] == []
