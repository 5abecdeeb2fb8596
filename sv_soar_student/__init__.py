"""sv-soar-student: an SV-Bench task (E1, E2) over any problem set, scored with SV-Bench's rubric.

    vf-eval sv-soar-student -a '{"source": "jsonl", "path": "../shared/svbench-mini/e1.jsonl"}'
    vf-eval sv-soar-student -a '{"task": "e2", "source": "jsonl", "path": "../shared/svbench-mini"}'

E2 is a tool-use environment by default (run_kubelinter, run_semgrep, run_opa backed by the offline
oracle, `sv_soar_student.e2_tools`, called as SV-Bench's with paths=[the `File path:` of the prompt]);
`tools=False` gives the single-turn variant.

Scoring: `scoring="svbench"` (default) scores exactly as SV-Bench, under its metric names (E2:
reward_config_auditing 1.0, format_reward 0.05, tool_observation_reward 0.2), so vf-eval numbers
compare with SV-Bench's; `scoring="corrected"` is E2's corrected reward, the one SOAR's grounding uses
(ids de-duplicated, a correct "no violations" earns full credit). `max_parse_chars` caps how much of
an E1 completion is parsed (off by default, as SV-Bench).

Problem sets: `source="builtin"` (seeded IoT-23-style flows), `"jsonl"` (SV-Bench JSONL, a hard
set, a teacher-generated dataset), `"hub"` (SV-Bench's gated Hugging Face set; needs HF_TOKEN).
"""

from __future__ import annotations

import verifiers as vf
from datasets import Dataset

from rubrics import task_rubric
from sv_soar.tasks import Row, Task, get_task
from sv_soar.tasks.e2 import fixture_path
from sv_soar.tasks.sources import load_rows
from sv_soar_student.e2_tools import E2_TOOL_SYSTEM_PROMPT, E2ToolEnv, materialise_configs

ENV_ID = "sv-soar-student"


def student_record(task: Task, row: Row) -> dict:
    """One dataset row as verifiers v0 reads it: question, answer, and info for reports.

    An E2 audit row is asked as SV-Bench asks it: a `File path:` line, then the config.
    """
    meta = row.get("meta") or {}
    return {
        "question": task.question(row),
        "answer": task.answer(row),
        # flat strings only, so rows from different sources share one Arrow schema
        "info": {
            "task_name": task.name,  # not "task": verifiers 0.1.14 reserves info["task"]
            "breakdown": task.breakdown(row),
            "source": str(meta.get("source", "")),
            "hash": str(meta.get("hash", "")),
            "split": str(meta.get("split", "")),
        },
    }


def load_environment(
    task: str = "e1",
    source: str = "builtin",
    path: str | None = None,
    n: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    system_prompt: str | None = None,
    tools: bool = True,
    max_turns: int = 6,
    scoring: str = "svbench",
    max_parse_chars: int | None = None,
    **kwargs,
) -> vf.SingleTurnEnv | vf.ToolEnv:
    """The student environment: `task` rows from `source`, SV-Bench's system prompt and rubric."""
    spec = get_task(task)
    rows = load_rows(spec.name, source, path=path, n=n, seed=seed, skip_bad=skip_bad)
    if not rows:
        raise ValueError(f"source {source!r} gave no {spec.name} rows; a verifiers env needs at least one")
    dataset = Dataset.from_list([student_record(spec, row) for row in rows])
    parser, rubric = task_rubric(spec, scoring=scoring, max_parse_chars=max_parse_chars)
    if spec.name == "e2" and tools:
        return E2ToolEnv(dataset=dataset, system_prompt=system_prompt or E2_TOOL_SYSTEM_PROMPT, parser=parser,
                         rubric=rubric, env_id=ENV_ID, max_turns=max_turns,
                         config_root=materialise_configs(rows, fixture_path), **kwargs)
    return vf.SingleTurnEnv(
        dataset=dataset,
        system_prompt=system_prompt if system_prompt is not None else spec.system_prompt,
        parser=parser,
        rubric=rubric,
        env_id=ENV_ID,
        **kwargs,
    )
