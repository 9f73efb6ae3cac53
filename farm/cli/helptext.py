"""Commands' help from their docstrings, as `--help` should show it.

typer keeps the single line breaks of a docstring's later paragraphs, so a paragraph wrapped at
the source's width is wrapped again at the terminal's: ragged lines ("...; on" / "loopback ...").
Here each paragraph becomes one line for rich to wrap, and rich markup in it is escaped, so a
``[section]`` of farm.toml named in a docstring shows as written.
"""

from __future__ import annotations

import inspect

import typer


def reflowed(doc: str) -> str:
    """A docstring with each paragraph on one line; lists and indented blocks keep their lines."""
    from rich.markup import escape  # rich loads only when help is shown (start-up time)

    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = paragraph.splitlines()
        keep = any(line.startswith((" ", "-", "*", "\b")) for line in lines)
        paragraphs.append(paragraph if keep else " ".join(line.strip() for line in lines))
    return escape("\n\n".join(paragraphs))


def reflow_help(app: typer.Typer) -> None:
    """Give every command of `app` (and of its sub-apps) its docstring's help, reflowed."""
    for command in app.registered_commands:
        doc = command.help or (command.callback and inspect.getdoc(command.callback))
        if doc:
            command.help = reflowed(doc)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
