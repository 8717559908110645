"""Generate docs/api.md from the docstrings of durable's public API.

    python docs/gen_api.py            # rewrite docs/api.md
    python docs/gen_api.py --check    # exit 1 if docs/api.md is out of date

The public API is ``durable.__all__`` plus ``durable.testing.__all__``. Every
name is listed once, under a heading chosen in ``SECTIONS``; a name missing
from ``SECTIONS`` (or listed there but not public) stops the script, so a new
public name cannot be left out of the reference. For each name: its signature
(``inspect.signature``) and its docstring; for a class, also the public methods
and properties it defines itself. ``tests/test_docs.py`` runs ``render()`` and
fails when docs/api.md differs, telling the developer to run this script.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import durable
import durable.testing

OUT = Path(__file__).resolve().parent / "api.md"

# (heading, introduction, names). Names are looked up in durable, then durable.testing.
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("Decorators", "Mark functions as workflows and activities; `RetryPolicy` and `Limit` are activity options "
     "(limits: [limits.md](limits.md)).",
     ["workflow", "activity", "RetryPolicy", "Limit"]),
    (
        "What the decorators return",
        "Not importable from `durable`, but part of the API: `@durable.workflow` returns a `Workflow`, "
        "`@durable.activity` an `Activity`. Calling either returns a command to `yield` (inside a workflow); "
        "`.func` is the undecorated function, for direct tests.",
        ["durable.registry.Workflow", "durable.registry.Activity"],
    ),
    (
        "Commands",
        "What workflow code yields. Each call builds a command; `yield` it inside a workflow "
        "and the `yield` returns the answer (see [concepts.md](concepts.md)).",
        ["sleep", "sleep_until", "wait_signal", "all_of", "any_of", "now", "uuid4", "random", "side_effect",
         "patched", "continue_as_new"],
    ),
    (
        "Inside workflows and activities",
        "Plain calls (not yielded) that read or publish facts about the running code.",
        ["workflow_info", "WorkflowInfo", "activity_info", "ActivityInfo", "set_status"],
    ),
    ("Client", "Start workflows and look at them from application code.",
     ["Client", "WorkflowHandle", "WorkflowStatus"]),
    ("Worker", "The RQ worker class that runs workflow steps and activities.", ["Worker"]),
    (
        "Errors",
        "Every error durable raises on purpose derives from `DurableError`.",
        ["DurableError", "ActivityFailed", "ActivityTimeout", "WorkflowFailed", "Cancelled", "NonDeterminismError",
         "WorkflowNotFound", "WorkflowAlreadyExists", "SerializationError", "PayloadTooLarge", "SignatureError"],
    ),
    (
        "durable.testing",
        "`from durable.testing import WorkflowEnvironment` (needs `pip install 'durable[testing]'`); "
        "a guide is in [testing.md](testing.md).",
        ["WorkflowEnvironment"],
    ),
]

# Classes whose methods are not listed: Worker's public methods are RQ's own
# (work, execute_job, ...), overridden for leases and Redis outages, not new API.
NO_MEMBERS = {"Worker"}

_SECTION_HEADER = re.compile(r"^(Args|Arguments|Returns|Raises|Attributes|Yields|Example|Examples):\s*$")


def _owner(name: str) -> tuple[str, Any]:
    if name.startswith("durable.registry."):
        return "durable.registry", getattr(durable.registry, name.rpartition(".")[2])
    if name in durable.__all__:
        return "durable", getattr(durable, name)
    if name in durable.testing.__all__:
        return "durable.testing", getattr(durable.testing, name)
    raise SystemExit(f"docs/gen_api.py: {name!r} is listed in SECTIONS but is not public; remove it")


def _check_sections() -> None:
    listed = [name for _, _, names in SECTIONS for name in names if not name.startswith("durable.registry.")]
    public = [*durable.__all__, *durable.testing.__all__]
    missing = [name for name in public if name not in listed]
    twice = sorted({name for name in listed if listed.count(name) > 1})
    if missing or twice:
        raise SystemExit(
            "docs/gen_api.py: every public name must be in exactly one section of SECTIONS; "
            f"missing: {missing}, listed twice: {twice}"
        )


class _Annotation:
    """An annotation kept as the source text (``from __future__ import annotations``), unquoted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquoted(annotation: Any) -> Any:
    return _Annotation(annotation) if isinstance(annotation, str) else annotation


def _signature(obj: Any, *, returns: bool = True) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = [p.replace(annotation=_unquoted(p.annotation)) for p in sig.parameters.values()]
    ret = _unquoted(sig.return_annotation) if returns else inspect.Signature.empty
    return str(sig.replace(parameters=params, return_annotation=ret))


def _rst_to_md(text: str) -> str:
    """Docstrings use RST inline literals (``x``) and ``::`` blocks; Markdown wants `x` and fences."""
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1])  # "finishes in milliseconds::" -> "finishes in milliseconds:"
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            while block and not block[0].strip():
                block.pop(0)
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```python", *block, "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _sections_to_lists(text: str) -> str:
    """Google-style ``Args:``/``Raises:`` sections as Markdown lists."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _SECTION_HEADER.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        out += [f"**{match.group(1)}:**", ""]
        i += 1
        items: list[str] = []
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            if not lines[i].strip():
                i += 1
                if i < len(lines) and not lines[i].startswith("    "):
                    break
                continue
            body = lines[i][4:]
            if body.startswith(" ") and items:  # a continuation line of the item above
                items[-1] += " " + body.strip()
            else:
                head, sep, rest = body.partition(": ")
                items.append(f"- `{head}`: {rest}" if sep and " " not in head else f"- {body}")
            i += 1
        out += [*items, ""]
    return "\n".join(out).strip()


def _doc(obj: Any) -> str:
    doc = inspect.getdoc(obj) if obj.__doc__ else None
    if not doc:
        return "*No docstring.*"
    return _sections_to_lists(_rst_to_md(doc))


def _members(cls: type) -> list[tuple[str, Any]]:
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, property) or inspect.isfunction(value):
            found.append((name, value))
    return found


def _is_exception(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def _render_name(module: str, name: str, obj: Any) -> list[str]:
    lines: list[str] = [f"### {module}.{name}", ""]
    if _is_exception(obj):
        bases = ", ".join(base.__name__ for base in obj.__bases__)
        init = obj.__dict__.get("__init__")
        sig = _signature(init, returns=False).replace("(self, ", "(").replace("(self)", "()") if init else ""
        lines += ["```python", f"class {name}({bases})" + (f"  # {name}{sig}" if sig else ""), "```", ""]
    elif isinstance(obj, type):
        lines += ["```python", f"class {name}{_signature(obj, returns=False)}", "```", ""]
    else:
        lines += ["```python", f"{module}.{name}{_signature(obj)}", "```", ""]
    lines += [_doc(obj), ""]
    if isinstance(obj, type) and not _is_exception(obj) and name not in NO_MEMBERS:
        for member, value in _members(obj):
            if isinstance(value, property):
                lines += [f"#### {name}.{member}", "", "*property*", "", _doc(value.fget), ""]
            else:
                sig = _signature(value).replace("(self, ", "(").replace("(self)", "()")
                lines += [f"#### {name}.{member}", "", "```python", f"{member}{sig}", "```", "", _doc(value), ""]
    return lines


def render() -> str:
    """The text docs/api.md should have."""
    _check_sections()
    lines = [
        "# API reference",
        "",
        "<!-- Generated by docs/gen_api.py from the docstrings: do not edit by hand. -->",
        "Generated from the docstrings by `python docs/gen_api.py`; `tests/test_docs.py` fails when this",
        "page is out of date. Everything here is importable from `durable` (or `durable.testing`); anything",
        "else is internal. Signatures are shown as Python writes them.",
        "",
    ]
    for heading, _, names in SECTIONS:
        anchor = re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        lines.append(f"- [{heading}](#{anchor}): " + ", ".join(f"`{n.rpartition('.')[2]}`" for n in names))
    lines.append("")
    for heading, intro, names in SECTIONS:
        lines += [f"## {heading}", "", intro, ""]
        for name in names:
            module, obj = _owner(name)
            lines += _render_name(module, name.rpartition(".")[2], obj)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


def missing_docstrings() -> list[str]:
    """Public names and members of public classes without a docstring."""
    missing = []
    for _, _, names in SECTIONS:
        for name in names:
            module, obj = _owner(name)
            name = name.rpartition(".")[2]
            if not obj.__doc__:
                missing.append(f"{module}.{name}")
            if isinstance(obj, type) and not _is_exception(obj) and name not in NO_MEMBERS:
                for member, value in _members(obj):
                    target = value.fget if isinstance(value, property) else value
                    if not target.__doc__:
                        missing.append(f"{module}.{name}.{member}")
    return missing


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/api.md is out of date: run `python docs/gen_api.py`", file=sys.stderr)
            return 1
        print("docs/api.md is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
    for name in missing_docstrings():
        print(f"no docstring: {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
