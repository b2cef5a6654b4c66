"""`sonia model`: point the router at a real model server, and find out at once if it is wrong.

`sonia model use URL --model NAME` asks the server for its models and for one
short completion with the very client the router uses, and writes the
configuration only when both answer: a wrong URL or model name is refused
here, not discovered later as an assistant that quietly answers from the
offline builtin model. `sonia model off` goes back to the builtin model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sonia.cli.options import HomeOption, resolve_home
from sonia.errors import ApiError, ConfigError, SoniaError
from sonia.services.router.providers import GenerationRequest, OpenAIProvider

console = Console(highlight=False)

PROBE_TIMEOUT_S = 30.0
ROUTER_KEYS = ("openai_base_url", "openai_model", "openai_api_key_file")


async def probe(url: str, model: str, api_key: str | None,
                timeout: float = PROBE_TIMEOUT_S) -> tuple[list[str], str]:
    """(the server's models, its reply to a short prompt); SoniaError saying what failed."""
    provider = OpenAIProvider(url, model, api_key, timeout=timeout)
    try:
        try:
            models = await provider.models()
        except ApiError as exc:
            raise SoniaError(f"the model server at {url} cannot list its models: "
                             f"{exc.detail}") from exc
        if model not in models:
            raise SoniaError(f"the model server at {url} has no model {model!r}; "
                             f"it has: {', '.join(models) or '(none)'}")
        request = GenerationRequest.of([{"role": "user", "content": "Reply with the word OK."}],
                                       max_tokens=8)
        try:
            reply = await provider.generate(request)
        except ApiError as exc:
            raise SoniaError(f"model {model!r} at {url} did not answer a completion: "
                             f"{exc.detail}") from exc
        return models, reply.text
    finally:
        await provider.aclose()


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(help="Choose the model the assistant speaks with.",
                            no_args_is_help=True)
    app.add_typer(model_app, name="model")

    @model_app.command("use")
    def use(url: Annotated[str, typer.Argument(help="an OpenAI-compatible server, e.g. "
                                               "http://127.0.0.1:11434/v1")],
            model: Annotated[str, typer.Option("--model", help="the model name to ask for")],
            api_key_file: Annotated[Path | None, typer.Option(
                "--api-key-file", help="a file holding the server's API key")] = None,
            home: HomeOption = None) -> None:
        """Probe an OpenAI-compatible model server and make it the default model."""
        h = resolve_home(home)
        h.check()
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"the model server URL must be http(s), got {url!r}", key="url")
        api_key = None
        if api_key_file is not None:
            try:
                api_key = api_key_file.expanduser().read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {api_key_file}: {exc.strerror}",
                                  key="api-key-file") from exc
        models, reply = asyncio.run(probe(url, model, api_key))
        h.configure({"router": {
            "openai_base_url": url, "openai_model": model,
            "openai_api_key_file": str(api_key_file.expanduser().resolve())
            if api_key_file else None}})
        console.print(f"model {model!r} at {url} answers ({len(models)} models there; "
                      f"it said {reply.strip()[:40]!r}).")
        console.print("It is the default now, with no fallback to the builtin model. "
                      "Restart the stack to use it: sonia down && sonia up")

    @model_app.command("off")
    def off(home: HomeOption = None) -> None:
        """Forget the model server: the offline builtin model answers again."""
        h = resolve_home(home)
        h.check()
        h.configure({"router": dict.fromkeys(ROUTER_KEYS)})
        console.print("The builtin model answers now. Restart the stack: sonia down && sonia up")
