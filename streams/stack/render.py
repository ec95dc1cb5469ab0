"""Configuration files of the local stack, rendered from `templates/` with `string.Template`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template


def render(template_name: str, **values: str) -> str:
    """The template with every `$name` replaced; a missing value raises KeyError."""
    text = resources.files("streams.stack").joinpath("templates", template_name).read_text()
    return Template(text).substitute(values)


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` unless it already holds exactly that; True if it wrote."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
