"""The student inner loop: SOAR's RL of one LoRA adapter on one problem set (trainer), its advantage
estimators (RLOO, GRPO, MaxRL), several students in one batch (lockstep), a student as its own copy of
the model instead (full_finetune), and their config."""
