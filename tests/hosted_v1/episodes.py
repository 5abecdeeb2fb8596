"""Run in the v1 venv: teacher episodes through verifiers' own episode machinery (`Env.run_slot`, the call
vf-eval and verifiers' env server make for each episode prime-rl dispatches), against a model server on
loopback that fails a share of its requests.

    python episodes.py SPEC.json OUT.json
    SPEC: {"env": {the [env] table: taskset, teacher, max_concurrent_agents},
           "replies": [str, ...],   served in turn, one per answered request
           "fail_every": k,         every k-th request is refused (0: none)
           "episodes": m,           episodes started together (asyncio.gather, as a dispatcher would)
           "cancel_first": bool}    first run one episode alone and cancel it once its students train
    OUT:  {"requests": {"answered": a, "refused": r}, "cancelled": {...} | null, "episodes": [...],
           "scoring": [{"start", "end"}, ...]}

The server is scripted, not a model: the failure behaviour is under test, and the tiny model cannot write
several distinct valid problems. Refusals are HTTP 400, which the harness's OpenAI SDK does not retry, so each
refused request is exactly one failed generation. The env is real, and its students train on the tiny model.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

torch.set_num_threads(1)


class ScriptedTeacher:
    """An OpenAI-compatible chat endpoint (streamed or not) answering with `replies` in turn."""

    def __init__(self, replies: list[str], fail_every: int) -> None:
        self.replies, self.fail_every = replies, fail_every
        self.answered = self.refused = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with owner.lock:
                    count = owner.answered + owner.refused + 1
                    refuse = owner.fail_every and count % owner.fail_every == 0
                    if refuse:
                        owner.refused += 1
                    else:
                        text = owner.replies[owner.answered % len(owner.replies)]
                        owner.answered += 1
                if refuse:
                    payload = json.dumps({"error": {"message": f"injected failure of request {count}",
                                                    "type": "invalid_request_error", "code": None}}).encode()
                    self.send_response(400)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                model, created, ident = body.get("model", "scripted"), int(time.time()), f"chatcmpl-{count}"
                usage = {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
                if not body.get("stream"):
                    payload = json.dumps({"id": ident, "object": "chat.completion", "created": created, "model": model,
                                          "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                       "message": {"role": "assistant", "content": text}}],
                                          "usage": usage}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
                events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                                 "logprobs": None, "finish_reason": None}]},
                          {**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
                          {**chunk, "choices": [], "usage": usage}]
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for event in events:
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def trace_record(trace) -> dict:
    metrics = {name: getattr(value, "value", value) for name, value in trace.metrics.items()}
    return {"ok": trace.ok, "trainable": trace.agent.trainable, "reward": trace.reward, "metrics": metrics,
            "errors": [f"{error.type}: {error.message[-800:]}" for error in trace.errors], "start": trace.timing.start}


def episode_record(episode) -> dict:
    return {"ok": episode.ok, "errors": [f"{e.type}: {e.message}" for e in episode.errors],
            "traces": [trace_record(t) for t in episode.traces]}


async def main(spec: dict, out: Path) -> None:
    import verifiers.v1 as vf
    from verifiers.v1.configs.env import EnvConfig
    from verifiers.v1.env import Env
    from verifiers.v1.utils.generic import concrete_type
    from verifiers.v1.utils.loaders import environment_class

    from sv_soar.teacher_step import TeacherStep

    scoring: list[dict] = []  # when each TeacherStep.score ran (it is called as is; only timed)
    score = TeacherStep.score

    def timed_score(self, *args, **kwargs):
        window = {"start": time.time()}
        scoring.append(window)
        try:
            return score(self, *args, **kwargs)
        finally:
            window["end"] = time.time()

    TeacherStep.score = timed_score

    run_dir = Path(spec["env"]["taskset"]["run_dir"])  # (validation below narrows spec["env"] in place)
    teacher = ScriptedTeacher(spec["replies"], spec.get("fail_every", 0))
    env_class = environment_class(spec["env"]["taskset"]["id"])
    env = env_class(concrete_type(env_class, EnvConfig, origin=Env).model_validate(spec["env"]))
    ctx = vf.ModelContext(client=vf.EvalClientConfig(base_url=f"http://127.0.0.1:{teacher.port}/v1",
                                                     api_key_var="SV_SOAR_TEST_KEY"),
                          model="scripted-teacher", sampling=vf.SamplingConfig(max_tokens=400, temperature=1.0))
    tasks = list(env.taskset)
    result: dict = {"cancelled": None}
    async with env.serving():
        if spec.get("cancel_first"):
            (slot,) = env.slots(tasks[0])
            running = asyncio.create_task(env.run_slot(slot, ctx))
            while not scoring:  # the episode's students are training: cancel it, as prime-rl drops a stale one
                await asyncio.sleep(0.05)
            running.cancel()
            try:
                await running
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            while "end" not in scoring[0]:  # its students finish in their thread
                await asyncio.sleep(0.1)
            result["cancelled"] = {"raised": cancelled, "state": json.loads((run_dir / "state.json").read_text())}
        slots = [slot for i in range(spec["episodes"]) for slot in env.slots(tasks[i % len(tasks)])]
        episodes = await asyncio.gather(*(env.run_slot(slot, ctx) for slot in slots))
    result |= {"requests": {"answered": teacher.answered, "refused": teacher.refused},
               "episodes": [episode_record(e) for e in episodes], "scoring": scoring}
    teacher.server.shutdown()
    out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:]
    asyncio.run(main(json.loads(Path(spec_path).read_text(encoding="utf-8")), Path(out_path)))
