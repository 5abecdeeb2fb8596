"""A verifiers client that answers with canned texts: the env tests' stand-in for a model server."""

from __future__ import annotations

import itertools

import verifiers as vf


class ScriptedClient(vf.Client):
    """Stands in for a model server, which tests cannot run: answers prompts with canned texts in turn.

    Everything else (init_state, the rollout loop, render_completion, Rubric.score_group) is the
    installed verifiers' own code.
    """

    def __init__(self, replies):
        super().__init__(object())
        self._replies = itertools.cycle(replies)

    def setup_client(self, config):
        return None

    async def to_native_tool(self, tool):
        return tool

    async def to_native_prompt(self, messages):
        return messages, {}

    async def get_native_response(self, prompt, model, sampling_args, tools=None, **kwargs):
        return next(self._replies)

    async def raise_from_native_response(self, response):
        return None

    async def from_native_response(self, response):
        message = vf.ResponseMessage(content=response, finish_reason="stop", is_truncated=False)
        return vf.Response(id="scripted", created=0, model="scripted", message=message)

    async def close(self):
        return None
