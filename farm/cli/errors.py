"""Turning library errors into a message and an exit code, once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from farm.errors import FarmError


@contextlib.contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except FarmError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
