"""E1 problem sources: the built-in IoT-23-style generator, SV-Bench JSONL files, the gated Hub set."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest

from sv_soar.jsonl import JsonlError, JsonlReport, read_jsonl
from sv_soar.tasks import get_task
from sv_soar.tasks.e1.flows import (
    PROMPT_RE,
    TEMPLATES,
    Flow,
    classify_flow,
    conn_state,
    generate_e1_flows,
    parse_question,
    render_question,
)
from sv_soar.tasks.sources import HubAccessError, load_rows

E1 = get_task("e1")
SVBENCH_META_KEYS = {"source", "scenario", "attack_family", "hash", "split"}
ZEEK_STATES = {"S0", "S1", "S2", "S3", "SF", "REJ", "RSTO", "RSTR", "OTH"}


@pytest.fixture(scope="module")
def real_rows(svbench_mini):
    return read_jsonl(svbench_mini / "e1.jsonl", E1.validate_row)


# --- the generator ------------------------------------------------------------------------------


def test_same_seed_same_rows_other_seed_other_rows():
    assert generate_e1_flows(200, seed=7) == generate_e1_flows(200, seed=7)
    assert generate_e1_flows(200, seed=7) != generate_e1_flows(200, seed=8)
    assert generate_e1_flows(0, seed=7) == []


def test_prompt_format_is_the_one_all_real_rows_share(real_rows):
    assert len(real_rows) == 100
    for row in real_rows:
        assert PROMPT_RE.match(row["question"]), row["question"]
        # parse -> render reproduces SV-Bench's text exactly
        assert render_question(parse_question(row["question"])) == row["question"]
    for row in generate_e1_flows(500, seed=1):
        assert PROMPT_RE.match(row["question"]), row["question"]
        assert render_question(parse_question(row["question"])) == row["question"]


def test_rows_are_shaped_like_svbench_rows(real_rows):
    rows = generate_e1_flows(300, seed=2)
    assert set(real_rows[0]) == {"question", "answer", "meta"}
    for row in rows:
        assert set(row) == {"question", "answer", "meta"}
        assert SVBENCH_META_KEYS <= set(row["meta"])
        assert E1.validate_row(row) == row
        assert row["meta"]["source"] == "sv-soar-builtin"
        assert row["meta"]["scenario"] in ZEEK_STATES
        assert row["meta"]["split"] in {"train", "dev", "test"}
        assert (row["meta"]["attack_family"] == "NA") == (row["answer"] == "Benign")
    assert len({row["question"] for row in rows}) == len(rows)  # no duplicate problems
    assert len({row["meta"]["hash"] for row in rows}) == len(rows)


def test_labels_are_balanced():
    for n in (1, 2, 101, 400):
        counts = Counter(row["answer"] for row in generate_e1_flows(n, seed=n))
        assert counts["Malicious"] == n // 2 and counts["Benign"] == n - n // 2


def test_every_row_obeys_the_written_rules():
    rows = generate_e1_flows(2000, seed=3)
    for row in rows:
        flow = parse_question(row["question"])
        assert classify_flow(flow) == (row["answer"], row["meta"]["rule"]), row
        assert conn_state(flow.proto, flow.history) == row["meta"]["scenario"]
    # every rule of the docstring's table is exercised, and every template is drawn
    assert len({row["meta"]["rule"] for row in rows}) == 17
    families = {row["meta"]["attack_family"] for row in rows}
    iot23 = {"PartOfAHorizontalPortScan", "C&C", "C&C-HeartBeat", "DDoS", "Okiru", "FileDownload", "Attack"}
    assert iot23 <= families


def test_a_fraction_of_each_label_is_subtle():
    rows = generate_e1_flows(2000, seed=4)
    for label in ("Malicious", "Benign"):
        cues = Counter(row["meta"]["cue"] for row in rows if row["answer"] == label)
        assert 0.25 < cues["subtle"] / (cues["subtle"] + cues["obvious"]) < 0.35
    heartbeats = [r for r in rows if r["meta"]["rule"] == "tcp-tls-tiny"]
    assert heartbeats and all("→443," in r["question"] for r in heartbeats)  # C&C that looks like HTTPS
    assert all(r["meta"]["cue"] == "obvious" for r in generate_e1_flows(200, seed=4, subtle_fraction=0.0))


def test_rules_agree_with_real_svbench_labels(real_rows):
    """The decision list is a model of IoT-23, not of itself: it labels SV-Bench's rows too."""
    agree = sum(classify_flow(parse_question(r["question"]))[0] == r["answer"] for r in real_rows)
    assert agree >= 95, agree  # 99 of 100 at the time of writing


def test_rules_on_hand_written_flows():
    assert classify_flow(Flow("tcp", 43750, 23, None, None, "S")) == ("Malicious", "tcp-single-syn")
    assert classify_flow(Flow("tcp", 43750, 23, 3.107256, None, "S")) == ("Benign", "tcp-syn-retransmit")
    assert classify_flow(Flow("tcp", 40000, 443, 0.5, 40, "ShADadfF")) == ("Malicious", "tcp-tls-tiny")
    assert classify_flow(Flow("tcp", 40000, 443, 30.0, 4000, "ShADadfF")) == ("Benign", "tcp-tls")
    assert classify_flow(Flow("udp", 40000, 53, 0.01, 90, "Dd")) == ("Benign", "udp-service")
    assert classify_flow(Flow("udp", 40000, 53, None, 900, "D")) == ("Malicious", "udp-dns-oversized")
    assert classify_flow(Flow("tcp", 6662, 62336, None, None, "C")) == ("Malicious", "tcp-c2-port")
    assert classify_flow(Flow("icmp", 8, 0, None, 64, "")) == ("Benign", "icmp-ping")
    assert render_question(Flow("icmp", 8, 0, None, 64, "")).startswith(
        "Device unknown-device observed icmp 8→0, duration ?, bytes 64, flags []."
    )


def test_every_template_draws_its_own_label():
    import random

    rng = random.Random(0)
    for template in TEMPLATES:
        for _ in range(200):
            assert classify_flow(template.sample(rng))[0] == template.label, template.name


# --- validate_row and breakdown -----------------------------------------------------------------


@pytest.mark.parametrize(
    "row, reason",
    [
        ([1, 2], "expected an object"),
        ({"answer": "Benign"}, "'question' is missing"),
        ({"question": "  ", "answer": "Benign"}, "non-empty string"),
        ({"question": 3, "answer": "Benign"}, "non-empty string"),
        ({"question": "q"}, "'answer' is missing"),
        ({"question": "q", "answer": "Malware"}, "expected 'Malicious' or 'Benign'"),
        ({"question": "q", "answer": 2}, "expected 'Malicious' or 'Benign'"),
        ({"question": "q", "answer": "Abstain"}, "expected 'Malicious' or 'Benign'"),
        ({"question": "q", "answer": "Benign", "meta": "x"}, "'meta' must be an object"),
    ],
)
def test_validate_row_says_what_is_wrong(row, reason):
    with pytest.raises(ValueError, match=reason):
        E1.validate_row(row)


@pytest.mark.parametrize("answer, canonical", [("malicious", "Malicious"), ("BENIGN", "Benign"), (1, "Malicious"),
                                               (0, "Benign"), (True, "Malicious"), (False, "Benign")])
def test_validate_row_reads_answers_as_svbench_scores_them(answer, canonical):
    # SV-Bench's rubric lower-cases both sides and reads a ClassLabel 1 as Malicious, 0 as Benign
    assert E1.validate_row({"question": "q", "answer": answer})["answer"] == canonical


def test_validate_row_normalises():
    bare = {"question": "q", "answer": "Benign"}
    assert E1.validate_row(bare) == {**bare, "meta": {}}
    # SV-Bench's loader maps an older build's "prompt" to "question"
    assert E1.validate_row({"prompt": "q", "answer": "Malicious", "meta": {"a": 1}})["question"] == "q"


def test_breakdown_is_family_else_connection_state(real_rows):
    assert E1.breakdown({"meta": {"attack_family": "C&C", "scenario": "SF"}}) == "C&C"
    assert E1.breakdown({"meta": {"attack_family": "NA", "scenario": "S0"}}) == "S0"
    assert E1.breakdown({"meta": {}}) == "unknown"
    assert {E1.breakdown(r) for r in real_rows} == {"S0", "OTH", "SF", "S3", "RSTR"}


# --- sources ------------------------------------------------------------------------------------


def test_builtin_source():
    rows = load_rows("e1", "builtin", n=20, seed=5)
    assert rows == generate_e1_flows(20, 5)
    assert len(load_rows("e1", "builtin")) == 256


def test_jsonl_source_reads_svbench_files_and_folders(svbench_mini, tmp_path):
    rows = load_rows("e1", "jsonl", path=svbench_mini / "e1.jsonl")
    assert len(rows) == 100 and rows[0]["meta"]["source"] == "iot23"
    assert load_rows("e1", "jsonl", path=svbench_mini) == rows  # the public-mini folder
    checkout = tmp_path / "security-verifiers"
    data = checkout / "environments" / "sv-env-network-logs" / "data"
    data.mkdir(parents=True)
    (data / "iot23-train-dev-test-v1.jsonl").write_text((svbench_mini / "e1.jsonl").read_text())
    assert load_rows("e1", "jsonl", path=checkout) == rows  # an SV-Bench checkout
    with pytest.raises(FileNotFoundError, match="without e1 data"):
        load_rows("e1", "jsonl", path=tmp_path / "security-verifiers" / "environments")


def test_n_is_a_seeded_sample(svbench_mini):
    everything = load_rows("e1", "jsonl", path=svbench_mini)
    first = load_rows("e1", "jsonl", path=svbench_mini, n=10, seed=1)
    assert first == load_rows("e1", "jsonl", path=svbench_mini, n=10, seed=1)
    assert first != load_rows("e1", "jsonl", path=svbench_mini, n=10, seed=2)
    assert len(first) == 10 and all(row in everything for row in first)
    assert load_rows("e1", "jsonl", path=svbench_mini, n=1000) == everything


def _bad_file(tmp_path):
    question = "Device unknown-device observed tcp 1→23, duration ?, bytes ?, flags [S]. Decide."
    good = {"question": question, "answer": "Malicious"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "answer": "Malware"}),
        "",
        json.dumps({"answer": "Benign"}),
        json.dumps({**good, "answer": "Benign"}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = _bad_file(tmp_path)
    with pytest.raises(JsonlError, match=rf"^{path}:2: not valid JSON"):
        load_rows("e1", "jsonl", path=path)


def test_skip_bad_counts_and_logs(tmp_path, caplog):
    path = _bad_file(tmp_path)
    report = JsonlReport()
    with caplog.at_level(logging.WARNING, logger="sv_soar.tasks.sources"):
        rows = load_rows("e1", "jsonl", path=path, skip_bad=True, report=report)
    assert [row["answer"] for row in rows] == ["Malicious", "Benign"]
    assert len(report) == 3
    assert report.skipped[0].startswith(f"{path}:2:")
    expected = "'answer' is 'Malware': expected 'Malicious' or 'Benign' (any case), or a ClassLabel 0 / 1"
    assert report.skipped[1] == f"{path}:3: {expected}"
    assert report.skipped[2] == f"{path}:5: 'question' is missing"
    assert "skipped 3 bad row(s)" in caplog.text and f"{path}:2:" in caplog.text


def test_hub_without_token_explains_the_gate_and_stays_offline(monkeypatch):
    import datasets

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("E1_HF_REPO", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("load_dataset was called without a token")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(HubAccessError) as excinfo:
        load_rows("e1", "hub")
    message = str(excinfo.value)
    assert "intertwine-ai/security-verifiers-e1 is a gated Hugging Face dataset" in message
    assert "HF_TOKEN" in message
    assert "https://huggingface.co/datasets/intertwine-ai/security-verifiers-e1" in message


# There is no internet here, so the token path runs against a stand-in for datasets.load_dataset
# that returns records the way the Hub serves SV-Bench's set (ClassLabel answers, some "prompt").
def test_hub_with_token_reads_and_converts_records(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(repo, split, token):
        calls.append((repo, split, token))
        return [
            {"question": "Device a observed tcp 1→23.", "answer": 1, "meta": {"scenario": "S0"}},
            {"prompt": "Device a observed udp 2→53.", "answer": 0, "meta": None},
            {"question": "", "answer": 0, "meta": None},
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("E1_HF_REPO", raising=False)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_test")
    with pytest.raises(JsonlError, match=r"^intertwine-ai/security-verifiers-e1\[train\] row 2: 'question'"):
        load_rows("e1", "hub")
    rows = load_rows("e1", "hub", skip_bad=True)
    assert calls[-1] == ("intertwine-ai/security-verifiers-e1", "train", "hf_test")
    assert [row["answer"] for row in rows] == ["Malicious", "Benign"]
    assert rows[1]["question"].startswith("Device a observed udp")

    monkeypatch.setenv("E1_HF_REPO", "me/my-e1")
    load_rows("e1", "hub", split="dev", skip_bad=True)
    assert calls[-1] == ("me/my-e1", "dev", "hf_test")


def test_hub_gated_refusal_becomes_a_clear_error(monkeypatch):
    import datasets
    import httpx
    from huggingface_hub.errors import GatedRepoError

    def refused(repo, split, token):
        request = httpx.Request("GET", f"https://huggingface.co/datasets/{repo}")
        raise GatedRepoError("403 gated", response=httpx.Response(403, request=request))

    monkeypatch.setattr(datasets, "load_dataset", refused)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(HubAccessError, match="access not granted"):
        load_rows("e1", "hub")


def test_unknown_source_and_task():
    with pytest.raises(ValueError, match="unknown source 'csv'"):
        load_rows("e1", "csv")
    with pytest.raises(ValueError, match="unknown task"):
        load_rows("e3", "builtin")
    with pytest.raises(ValueError, match="needs path="):
        load_rows("e1", "jsonl")
