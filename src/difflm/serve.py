"""`difflm serve RUN`: a local web page where a sentence forms out of noise, step by step.

A small FastAPI app (the `serve` extra) with server-sent events:

    GET /            the page: constraints (length, keywords, an infill template, an attribute),
                     a sampler and a number of steps, and the live view
    GET /generate    one run: a stream of events
                       step   {"step", "steps", "t", "rows"}   the rounded words of x̂0 after a step
                       done   {"samples": [{"text", "checks", "grammatical"}], "nfe"}
                       error  {"message"}                     one line: what was wrong with the input

Each request samples in its own worker thread with its own generator and sends its events to
its own stream, so concurrent users never see each other's runs; anything a request gets
wrong (an unknown word, an impossible constraint, a bad number) becomes its error event and
the server goes on. Diffusion runs stream every step (the sampler's callback; a discrete
run's x̂0 is its written words and the network's best guess at each blank, `StepReport`);
an autoregressive run has no steps to show, and is refused. Final samples are marked for
each constraint and, on the bundled grammar, for grammaticality (its exact parser).
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import torch

from difflm import control, hub

try:  # the serve extra; at module level, where FastAPI resolves the endpoints' annotations
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, StreamingResponse
except ImportError:
    FastAPI = None  # type: ignore[assignment,misc]
from difflm.model.denoiser import Denoiser
from difflm.pipeline import Pipeline
from difflm.sampling import TOKEN_SAMPLERS
from difflm.sampling.base import StepInfo
from difflm.text.grammar import default_parser

#: Limits of one request: a page is for watching, not for bulk sampling.
MAX_STEPS, MAX_ROWS = 1000, 8
#: The constraints the page offers, by `control.FACTORIES` name.
FIELDS = ("length", "keywords", "infill", "attribute")


def samplers_of(pipe: Pipeline) -> list[str]:
    """The samplers a run offers on the page, its default first."""
    kind = pipe.config.model.kind
    if kind in TOKEN_SAMPLERS:
        names = sorted(TOKEN_SAMPLERS[kind])
    else:
        names = ["ddpm", "ddim", "dpm++2m"] + (["sweep"] if getattr(pipe.model, "sweep_lag", 0) else [])
    return sorted(names, key=lambda name: name != pipe.default_sampler)


def run_request(pipe: Pipeline, run: str, query: dict[str, str], emit: Callable[[str, dict], None]) -> None:
    """Sample one request's sentences, sending its step, done or error events to `emit`."""
    try:
        steps, n = int(query.get("steps") or 50), int(query.get("n") or 4)
    except ValueError:
        emit("error", {"message": "steps and n must be whole numbers"})
        return
    if not (1 <= steps <= MAX_STEPS and 1 <= n <= MAX_ROWS):
        emit("error", {"message": f"steps must be 1–{MAX_STEPS} and n 1–{MAX_ROWS}"})
        return
    sampler = query.get("sampler") or pipe.default_sampler
    try:
        specs = {name: (query.get(name) or "").strip() or None for name in FIELDS}
        given = any(spec is not None for spec in specs.values())
        constraints = (
            control.parse_constraint_args(specs, pipe.vocab, pipe.config.data.max_len, run=run) if given else []
        )
        seed = int(query.get("seed") or 0)
        callback = _step_events(pipe, steps, emit)  # `create_app` refuses autoregressive runs: every run has steps
        output = pipe.generate(n, sampler=sampler, steps=steps, seed=seed, constraints=constraints, callback=callback)
    except ValueError as err:
        emit("error", {"message": str(err).strip().splitlines()[0]})
        return
    except Exception as err:  # the server must outlive any request; the user still gets one line
        emit("error", {"message": f"internal error: {type(err).__name__}: {err}"})
        return
    texts = pipe.decode(output.tokens)
    grammatical = None
    if pipe.config.data.corpus == "grammar":
        grammatical = [r.grammatical for r in default_parser().parse([t.split() for t in texts])]
    checked = [c for c in constraints if isinstance(c, control.Checkable)]
    samples = [
        {
            "text": text,
            "checks": {c.name: bool(c.satisfied(text.split())) for c in checked},
            "grammatical": None if grammatical is None else grammatical[i],
        }
        for i, text in enumerate(texts)
    ]
    emit("done", {"samples": samples, "nfe": output.nfe})


def _step_events(pipe: Pipeline, steps: int, emit: Callable[[str, dict], None]) -> Callable[[StepInfo], None]:
    """The sampler callback that sends each step's rounded x̂0 as a step event."""
    model = pipe.model

    def callback(info: StepInfo) -> None:
        with torch.no_grad():  # a discrete run's x̂0 is one-hot words already
            words = model.embedding.logits(info.x0).argmax(-1) if isinstance(model, Denoiser) else info.x0.argmax(-1)
        emit("step", {"step": info.step + 1, "steps": steps, "t": round(info.t, 4), "rows": pipe.decode(words)})

    return callback


def create_app(run: str) -> Any:
    """The FastAPI app serving `run` (a run directory, "pretrained:NAME" or a Hub id).

    Raises:
        ValueError: the run cannot be loaded, or fastapi is missing (`pip install 'difflm[serve]'`).
    """
    if FastAPI is None:
        raise ValueError("difflm serve needs FastAPI and uvicorn: pip install 'difflm[serve]'")
    directory = str(hub.resolve(run))
    pipe = Pipeline.from_run(directory)
    if pipe.is_autoregressive:
        raise ValueError(f"{run} is an autoregressive run: the page shows a diffusion run's denoising")
    page = _page(run, pipe)
    app = FastAPI(title="difflm")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/generate")
    async def generate(request: Request) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict] | None] = asyncio.Queue()

        def emit(kind: str, data: dict) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, data))

        def work() -> None:
            try:
                run_request(pipe, directory, dict(request.query_params), emit)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        loop.run_in_executor(None, work)

        async def events() -> AsyncIterator[str]:
            while (item := await queue.get()) is not None:
                kind, data = item
                yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def serve(run: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the page's server until interrupted."""
    app = create_app(run)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


def _page(run: str, pipe: Pipeline) -> str:
    options = "".join(f'<option value="{html.escape(s)}">{html.escape(s)}</option>' for s in samplers_of(pipe))
    title = html.escape(f"difflm · {run}")
    return (
        _PAGE.replace("{{TITLE}}", title)
        .replace("{{SAMPLERS}}", options)
        .replace("{{KIND}}", html.escape(pipe.config.model.kind))
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{TITLE}}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; color: #222; }
 fieldset { border: 1px solid #ccc; padding: 1em; } label { display: inline-block; margin: .3em 1em .3em 0; }
 input[type=text] { width: 14em; } #rows div, #final div { font-family: ui-monospace, monospace; margin: .2em 0; }
 #error { color: #b00; font-weight: bold; } #progress { color: #555; margin: .5em 0; }
 .ok { color: #070; } .no { color: #b00; }
</style></head><body>
<h1>{{TITLE}}</h1>
<p>A {{KIND}} model. Set constraints, press <b>Generate</b>, and watch the sentences form: each line
is the model's current guess x̂<sub>0</sub>, rounded to words, after each denoising step.</p>
<form id="form"><fieldset>
 <label>length <input type="text" name="length" id="length" placeholder="e.g. 10"></label>
 <label>keywords <input type="text" name="keywords" id="keywords" placeholder="e.g. cheap,Zizzi"></label><br>
 <label>infill <input type="text" name="infill" id="infill" placeholder="The ___ serves ___ food ."></label>
 <label>attribute <input type="text" name="attribute" id="attribute" placeholder="e.g. food=Italian"></label><br>
 <label>sampler <select name="sampler" id="sampler">{{SAMPLERS}}</select></label>
 <label>steps <input type="text" name="steps" id="steps" value="50" size="4"></label>
 <label>sentences <input type="text" name="n" id="n" value="4" size="2"></label>
 <button type="submit" id="go">Generate</button>
</fieldset></form>
<div id="error"></div><div id="progress"></div><div id="rows"></div>
<h2>Final sentences</h2><div id="final"></div>
<script>
let source = null, seen = 0;
const $ = (id) => document.getElementById(id);
function text(node, value) { node.textContent = value; return node; }
$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (source) source.close();
  seen = 0; ["error", "progress", "rows", "final"].forEach((id) => text($(id), ""));
  document.body.dataset.steps = "0"; document.body.dataset.state = "running";
  const query = new URLSearchParams(new FormData($("form")));
  source = new EventSource("/generate?" + query.toString());
  source.addEventListener("step", (e) => {
    const d = JSON.parse(e.data); seen += 1; document.body.dataset.steps = String(seen);
    text($("progress"), `step ${d.step} of ${d.steps} (t = ${d.t})`);
    $("rows").replaceChildren(...d.rows.map((r) => text(document.createElement("div"), r || "·")));
  });
  source.addEventListener("done", (e) => {
    const d = JSON.parse(e.data);
    $("final").replaceChildren(...d.samples.map((s) => {
      const div = document.createElement("div");
      const marks = Object.entries(s.checks).map(([k, v]) => `${v ? "✓" : "✗"} ${k}`);
      if (s.grammatical !== null) marks.push(`${s.grammatical ? "✓" : "✗"} grammatical`);
      div.className = Object.values(s.checks).every((v) => v) && s.grammatical !== false ? "ok" : "no";
      return text(div, `${s.text}   [${marks.join(", ")}]`);
    }));
    text($("progress"), `done: ${d.nfe} network evaluations per sentence`);
    document.body.dataset.state = "done"; source.close();
  });
  source.addEventListener("error", (e) => {
    if (e.data) text($("error"), JSON.parse(e.data).message);
    else if (document.body.dataset.state !== "done") text($("error"), "the connection to the server was lost");
    document.body.dataset.state = "error"; source.close();
  });
});
</script></body></html>
"""
