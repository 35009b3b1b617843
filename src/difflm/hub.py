"""Hugging Face Hub conventions: a trained model saved as a model repository, and loading one
by directory or by Hub id.

A saved model is the layout of a Hugging Face model repository:

    config.json         the run's config (what `difflm train` writes)
    model.safetensors   the weights sampling uses (a run's EMA weights)
    vocab.json          the vocabulary
    conditions.json     the slot=value labels of a run trained with model.condition=slots
    README.md           the model card: what it is, its data, how it was trained and measured

`resolve` turns a local directory, a model shipped in the package ("pretrained:grammar",
`pretrained()`) or a Hub id ("owner/name", "owner/name@revision") into a directory: an id is
fetched by `huggingface_hub.snapshot_download` (the `hub` extra), and only the files above,
so nothing else in a repository is read. Loading reads JSON and safetensors only: no file is
ever executed or unpickled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from difflm import checkpoint
from difflm.config import Config
from difflm.run import CONDITIONS_FILE, Network
from difflm.text.slots import SlotLabels
from difflm.text.vocab import Vocab

#: The files of a saved model (module docstring); a Hub download fetches these only.
MODEL_FILES = ("config.json", "model.safetensors", "vocab.json", CONDITIONS_FILE, "README.md")
_PRETRAINED = Path(__file__).parent / "pretrained"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def save_pretrained(
    directory: str | Path,
    config: Config,
    vocab: Vocab,
    model: Network,
    conditions: SlotLabels | None = None,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model in the Hub layout (module docstring); README.md last, so it marks the
    directory complete. `card` adds sections to the model card: a title -> its text."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save(directory / "config.json")
    vocab.save(directory / "vocab.json")
    if conditions is not None:
        conditions.save(directory / CONDITIONS_FILE)
    checkpoint.save_weights(directory / "model.safetensors", model)
    checkpoint.atomic_write_text(directory / "README.md", model_card(config, vocab, model, card or {}))
    return directory


def model_card(config: Config, vocab: Vocab, model: Network, sections: Mapping[str, Any]) -> str:
    """A model card with the Hub's YAML front matter (library, tags) and the model's facts."""
    m, d = config.model, config.data
    size = sum(p.numel() for p in model.parameters())
    lines = [
        "---",
        "library_name: difflm",
        "tags:",
        "- text-generation",
        f"- {'diffusion' if m.kind != 'autoregressive' else 'autoregressive'}",
        "---",
        "",
        f"# difflm {m.kind} model",
        "",
        f"- **Family:** {m.kind} (generator {m.generator}, condition {m.condition})",
        f"- **Corpus:** `{d.corpus}` ({len(vocab)} words in the vocabulary, rows of {d.max_len} positions)",
        f"- **Size:** {size / 1e6:.2f} M parameters ({m.layers} layers, hidden {m.hidden}, d = {m.embed_dim})",
        f"- **Training:** {config.train.steps} steps of {config.train.batch_size} sentences, seed {config.train.seed}",
        "",
        "```python",
        "import difflm",
        "",  # ruff formats the code blocks of the Markdown in the package
        'pipe = difflm.load("THIS_DIRECTORY_OR_HUB_ID")',
        "print(pipe.sample(4))",
        "```",
    ]
    for title, text in sections.items():
        lines += ["", f"## {title}", "", str(text).strip()]
    return "\n".join(lines) + "\n"


def pretrained() -> list[str]:
    """The names of the models shipped in the package (`pretrained:NAME`; `make pretrained`)."""
    return sorted(p.name for p in _PRETRAINED.iterdir() if (p / "README.md").is_file()) if _PRETRAINED.is_dir() else []


def resolve(spec: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """The directory of a model given as a local directory, "pretrained:NAME" or a Hub id
    (module docstring).

    Raises:
        ValueError: none of these, an unknown pretrained name (the shipped ones listed),
            huggingface_hub missing, or the download failed (the Hub's message, on one line).
    """
    path = Path(spec)
    if path.is_dir():
        return path
    text = str(spec)
    if text.startswith("pretrained:"):
        name = text.removeprefix("pretrained:")
        if name not in pretrained():
            raise ValueError(f"no pretrained model {name!r}; shipped: {', '.join(pretrained()) or 'none'}")
        return _PRETRAINED / name
    if not _REPO_ID.match(text) or path.exists():
        raise ValueError(f"run directory not found: {spec}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(
            f"{spec} is not a local directory; loading it from the Hugging Face Hub needs "
            "huggingface_hub: pip install 'difflm[hub]'"
        ) from None
    repo, _, revision = text.partition("@")
    try:
        local = snapshot_download(
            repo, revision=revision or None, allow_patterns=list(MODEL_FILES), cache_dir=cache_dir
        )
    except Exception as err:  # the Hub raises many kinds (offline, not found, gated); the user needs one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot fetch {spec} from the Hugging Face Hub: {first}") from None
    return Path(local)
