"""One nesting walker and one limit for every depth check: a farm.toml (`farm.tomltext`) and what
the controller's intake checks (the renderer facts sent with a project, the configured settings)
agree at the limit, and the intake's error names the key too."""

from __future__ import annotations

import pytest

from farm.controller.intake import IntakeLimits, check_depth, prepare
from farm.errors import ProjectError
from farm.tomltext import MAX_DEPTH, parse_toml, too_deep_path


def _nested(depth: int, inner: object = 1, box=lambda v: {"a": v}) -> object:
    value = inner
    for _ in range(depth):
        value = box(value)
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5000])
def test_farm_toml_and_the_intake_agree_at_the_limit(depth):
    refused = depth > MAX_DEPTH
    text = "a" + ".a" * (depth - 1) + " = 1\n"  # dotted keys: the value `depth` tables down
    if refused:
        toml_error = f"farm.toml: a.a.a ...: tables and arrays nest more than {MAX_DEPTH}"
        with pytest.raises(ProjectError, match=toml_error):
            parse_toml(text, "farm.toml")
        intake_error = rf"facts: settings nest more than {MAX_DEPTH} levels deep \(at a.a.a"
        with pytest.raises(ProjectError, match=intake_error):
            check_depth(_nested(depth), IntakeLimits().max_depth, "facts")
    else:
        assert too_deep_path(parse_toml(text, "farm.toml")) is None
        check_depth(_nested(depth), IntakeLimits().max_depth, "facts")


@pytest.mark.parametrize("box", [lambda v: [v], lambda v: (v,), lambda v: {"k": v}],
                         ids=["lists", "tuples", "tables"])
def test_every_kind_of_container_counts_a_level(box):
    assert too_deep_path(_nested(MAX_DEPTH, box=box)) is None
    assert too_deep_path(_nested(MAX_DEPTH + 1, box=box)) is not None


def test_deep_renderer_facts_are_refused_naming_where(synthetic):
    folder = synthetic(jobs=1)
    facts = {"blender": _nested(MAX_DEPTH + 3, box=lambda v: {"version": [v]})}
    error = (r"the renderer facts sent with the project: settings nest more than "
             rf"{MAX_DEPTH} levels deep \(at blender.version.version \.\.\.\)")
    with pytest.raises(ProjectError, match=error):
        prepare(str(folder), None, uploaded=True, hashes=None, facts=facts)
