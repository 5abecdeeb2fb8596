"""A task: everything that differs between E1, E2 and any task a user registers (docs/tasks.md).

The student's side (prompt, rubric, success, row validation), the teacher's side (its prompt and the
parser of what it writes) and where the task's rows live (Hugging Face, an SV-Bench checkout, a
generator) are fields of one object, so the code that runs SOAR reads them and never branches on a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from sv_soar.generation import ChatPrompt

if TYPE_CHECKING:
    from pydantic import BaseModel

Row = dict[str, Any]


@dataclass(frozen=True)
class Task:
    name: str
    system_prompt: str
    # full SV-Bench rubric of one completion: {"reward": weighted total, <component>: value, ...}
    score: Callable[[str, Row], dict[str, float]]
    # grounding="correctness": did the completion solve the row (E1: label == answer)
    is_success: Callable[[str, Row], bool]
    # the row's breakdown key for cold-start reports (E1: attack family / scenario)
    breakdown: Callable[[Row], str]
    # validate and normalise one SV-Bench row; raises ValueError with a reason
    validate_row: Callable[[Any], Row]
    # for tasks whose answers state a confidence (E1): (confidence or None, correct, abstained), or
    # None when nothing parsed; feeds ECE and the abstain rate of the final evaluation
    calibration_point: Callable[[str, Row], tuple[float | None, bool, bool] | None] | None = None
    # what a dataset record carries as `answer` (E1: the label; E2: the row as JSON, for its rubric)
    answer_of: Callable[[Row], str] | None = None
    # tokens a complete answer needs, the default where a command samples answers (`sv-soar hardset`)
    answer_tokens: int = 96
    # the student env's question for a row, when it is not row["question"] (E2: SV-Bench's `File path:` line)
    student_question: Callable[[Row], str] | None = None
    # saved-results metrics that mean "solved", with the value that counts, first found wins (`sv-soar hardset
    # --from-results`; E1: SV-Bench's reward_accuracy = 1)
    success_metrics: tuple[tuple[str, float], ...] = ()
    # SV-Bench's environment ids of this task (E1: sv-env-network-logs): how a saved run's metadata.json or
    # its rows' env_name say which task it ran (`sv-soar hardset --from-results` on a folder of mixed runs)
    svbench_envs: tuple[str, ...] = ()
    # the teacher's side (docs/design.md §4): the chat prompt of one teacher rollout, keyword options the
    # task's own (E2: difficulty, sub_skill, lang) ...
    teacher_prompt: Callable[..., ChatPrompt] | None = None
    # the model that checks those options (E2: sv_soar.tasks.e2.options.E2Options) before a prompt is built
    # (sv_soar.tasks.teacher); None: the prompt checks its own (E1 takes none)
    options: type[BaseModel] | None = None
    # ... and the parser of one teacher completion: (text, *, limits, hard_set_index, options) ->
    # sv_soar.teacher.checks.TeacherProblem or Rejection, never raising on the text
    parse_problem: Callable[..., Any] | None = None
    # called with a batch of teacher completions before they are parsed one by one (E2: one oracle run a language)
    prefetch_problems: Callable[[list[Any], Any], None] | None = None
    # where the task's rows are published: a Hugging Face dataset, the environment variable that overrides
    # it (SV-Bench's E1_HF_REPO), its files in an SV-Bench checkout or public-mini folder (sv_soar.tasks.sources)
    hub_dataset: str | None = None
    hub_dataset_env: str | None = None
    svbench_paths: tuple[str, ...] = ()
    # source="builtin": n rows, seeded (E1: sv_soar.tasks.e1.flows)
    generate_rows: Callable[[int, int], list[Row]] | None = None
    # twin pairs (docs/design.md §7): a hard row's twin, identical but for the causal feature and oppositely
    # labelled. When set, Acc on Q_R is pair accuracy J = mean over Q_R of correct(x) + correct(twin(x)) − 1,
    # which is 0 for any answer that ignores the feature (sv_soar.tasks.mechanism)
    twin_of: Callable[[Row], Row] | None = None
    # whether a row is a stepping stone by construction (the mechanism task's icmp flows): the step log's share
    stepping_stone: Callable[[Row], bool] | None = None

    def answer(self, row: Row) -> str:
        return self.answer_of(row) if self.answer_of is not None else row["answer"]

    def question(self, row: Row) -> str:
        """The student's question for a row (the student env's `question` column)."""
        return self.student_question(row) if self.student_question is not None else row["question"]

    def prompt(self, row: Row) -> ChatPrompt:
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": row["question"]},
        ]
