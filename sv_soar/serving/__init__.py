"""Serving a generation engine to tools that speak the OpenAI API (vf-eval, verifiers environments).

`sv_soar.serving.openai_server` is `sv-soar serve-model`: chat completions over loopback, with
concurrent requests dynamically batched into single engine calls.
"""
