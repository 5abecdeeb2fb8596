"""SOAR's outer-loop defaults, each defined once (docs/design.md §4), and the project's default model: RunConfig,
the v0 teacher env and the v1 teacher env all read them from here. A leaf module: it imports nothing, so a config
loads without torch."""

# The embedded default model (docs/design.md §6: no download; sv_soar.models.EMBEDDED_MODELS ships it), the teacher's
# and the student's unless a config names another. The paper's is Llama-3.2-3B-Instruct.
DEFAULT_MODEL = "smollm2-135m-instruct"

WINDOW = 3  # SOAR: moving average of R̂_t over the last 3 outer steps
TAU = 0.01  # SOAR: promote when that average exceeds 0.01

# What a teacher rollout gets when it cannot be scored (an invalid problem in the envs, or a dataset whose students
# all failed: an error, out of memory, a time limit): NEUTRAL, no advantage. `sv-soar train` leaves such a dataset
# out of the teacher's RLOO; the envs, whose trainer takes one reward a rollout, give it R̂_t (the step's mean R_k),
# which is advantage ≈ 0 under a group-mean baseline. A number <= 0 (e.g. -1.0, the worst R_k) is an option, but
# it makes a machine fault the strongest signal of a step.
NEUTRAL = "neutral"
FLOOR = NEUTRAL
