"""Serving a generation engine to tools that speak the OpenAI API (vf-eval, verifiers environments).

`sv_soar.serving.openai_server` is the server `sv-soar serve-model` runs: chat completions over loopback, with
concurrent requests dynamically batched into single engine calls.
"""
