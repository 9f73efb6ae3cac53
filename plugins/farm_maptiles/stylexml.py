"""A Mapnik style read as a plain element tree with line numbers, for checks before Mapnik sees it.

Read with expat (the standard library's parser), which tells each element's line, so every
error can say ``style/map.xml:12``. Entity declarations are refused: Mapnik's own parser
leaves entities unexpanded while expat would expand them, so the two would read different
paths, and an external entity is a way to read any file on the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from xml.parsers import expat


class StyleProblem(ValueError):
    """Something wrong in a style, at ``line`` (1-based, or None when not one line)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class StyleSyntaxError(StyleProblem):
    """The style is not XML farm can check."""


@dataclass
class Element:
    """One XML element: tag, attributes, its own text (children's excluded), line, children."""

    tag: str
    attrib: dict[str, str]
    line: int
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def iter(self, tag: str | None = None) -> Iterator[Element]:
        """This element and every descendant (document order), optionally only those named ``tag``."""
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            yield from child.iter(tag)

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def all_text(self) -> str:
        """The text of this element and its descendants, in order (a label's whole expression)."""
        return self.text + "".join(child.all_text() for child in self.children)


def parse_style(data: bytes) -> Element:
    """The root element of a style; raises `StyleSyntaxError` with the line of the problem."""
    parser = expat.ParserCreate()
    root: list[Element] = []
    stack: list[Element] = []

    def start(tag: str, attrib: dict[str, str]) -> None:
        node = Element(tag, attrib, parser.CurrentLineNumber, stack[-1] if stack else None)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    def entity(name: str, *_: object) -> None:
        raise StyleSyntaxError(
            f"entity declaration {name!r}: styles may not declare entities (Mapnik does not expand them)",
            parser.CurrentLineNumber,
        )

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.EntityDeclHandler = entity
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise StyleSyntaxError(f"not well-formed XML: {expat.ErrorString(exc.code)}", exc.lineno) from None
    if not root or root[0].tag != "Map":
        line = root[0].line if root else None
        raise StyleSyntaxError("not a Mapnik style: the root element must be <Map>", line)
    return root[0]
