"""What the documentation promises about the code, checked against the code: the CLI
reference covers every command and exit status, the lifecycle diagram shows exactly the
lifecycle, install hints work from a checkout too, and the docs need no network."""

from __future__ import annotations

import argparse
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from referralkit import cli
from referralkit.lifecycle import TABLE
from referralkit.model import Status

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SVG = "{http://www.w3.org/2000/svg}"


def commands(parser: argparse.ArgumentParser, prefix: str = "referralkit") -> list[str]:
    """Every runnable command of ``parser``: ``referralkit db upgrade``, ..."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, f"{prefix} {name}")
    return found or [prefix]


class TestCliReference:
    """docs/reference/cli.md"""

    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")

    def test_every_command_is_in_the_synopsis(self) -> None:
        """Each command the parser knows has its synopsis line (fhir and db included)."""
        listed = commands(cli.build_parser())
        assert "referralkit fhir export" in listed
        assert "referralkit db upgrade" in listed
        synopsis = self.text.split("```text", 1)[1].split("```", 1)[0]
        for command in listed:
            assert re.search(rf"^{re.escape(command)}\b", synopsis, re.MULTILINE), command

    def test_options_come_from_the_parser(self) -> None:
        """The options are rendered from build_parser by sphinx-argparse, so none is left
        out."""
        assert ":func: build_parser" in self.text
        assert ":module: referralkit.cli" in self.text

    def test_exit_statuses_are_the_documented_ones(self) -> None:
        """The exit status table lists exactly the statuses the command line uses."""
        table = re.findall(r"^\| (\d+) \|", self.text, re.MULTILINE)
        assert [int(s) for s in table] == [
            cli.EXIT_OK,
            cli.EXIT_PROBLEMS,
            cli.EXIT_ERROR,
            cli.EXIT_INTERRUPTED,
        ]
        assert (cli.EXIT_OK, cli.EXIT_PROBLEMS, cli.EXIT_ERROR, cli.EXIT_INTERRUPTED) == (
            0,
            1,
            2,
            130,
        )


def load_extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lifecycle_svg", DOCS / "_ext" / "lifecycle_svg.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestLifecycleDiagram:
    """The SVG the docs build draws (docs/_ext/lifecycle_svg.py), read back."""

    @pytest.fixture(scope="class")
    @classmethod
    def drawing(cls) -> ET.Element:
        return ET.fromstring(load_extension().lifecycle_svg())

    def test_every_state_once(self, drawing: ET.Element) -> None:
        states = [g.get("data-state") for g in drawing.iter(f"{SVG}g") if g.get("data-state")]
        assert sorted(states) == sorted(s.value for s in Status)

    def test_exactly_the_transitions_of_the_lifecycle(self, drawing: ET.Element) -> None:
        """Every (source, event, target) of the lifecycle's table, and nothing else, so the
        picture cannot go stale when a transition is added."""
        drawn = set()
        for group in drawing.iter(f"{SVG}g"):
            if group.get("class") == "transition":
                events = (group.get("data-events") or "").split()
                assert events
                for event in events:
                    drawn.add((group.get("data-source"), event, group.get("data-target")))
        assert drawn == {(s.value, e, t.value) for s, e, t in TABLE.pairs()}

    def test_terminal_states_are_marked(self, drawing: ET.Element) -> None:
        for group in drawing.iter(f"{SVG}g"):
            state = group.get("data-state")
            if state:
                rect = group.find(f"{SVG}rect")
                assert rect is not None
                thick = rect.get("stroke-width") == "2.5"
                assert thick == Status(state).is_terminal, state

    def test_the_same_drawing_every_time(self) -> None:
        """grandalf iterates sets of vertices: hashed by position, not by address, so the
        layout (and the built docs) do not change from one build to the next."""
        extension = load_extension()
        assert extension.lifecycle_svg() == extension.lifecycle_svg()

    def test_a_loop_and_a_shared_arrow(self) -> None:
        """A transition to the same state is a loop; two events between the same states
        share one arrow, labelled with both."""
        picture = load_extension().svg(
            ["a", "b"], [("a", "go", "b"), ("a", "jump", "b"), ("b", "stay", "b")]
        )
        root = ET.fromstring(picture)
        arrows = [g for g in root.iter(f"{SVG}g") if g.get("class") == "transition"]
        assert [(g.get("data-source"), g.get("data-events")) for g in arrows] == [
            ("a", "go jump"),
            ("b", "stay"),
        ]
        assert "go / jump" in picture


class TestNoNetwork:
    def test_no_diagram_from_a_cdn(self) -> None:
        """The docs no longer use sphinxcontrib-mermaid (mermaid.js from a CDN)."""
        conf = (DOCS / "conf.py").read_text(encoding="utf-8")
        assert "sphinxcontrib.mermaid" not in conf
        assert "{mermaid}" not in (DOCS / "lifecycle.md").read_text(encoding="utf-8")


HINT = re.compile(r"""pip install ['"]?referralkit\[(\w+)\]""")


def hinting_files() -> list[Path]:
    """Text files that may hold an install hint: source (FHIR interop excepted: its own
    engineer's), docs, README, examples."""
    files = [
        ROOT / "README.md",
        *sorted((DOCS).rglob("*.md")),
        *sorted((ROOT / "examples").glob("*.py")),
    ]
    files += [
        p for p in sorted((ROOT / "src" / "referralkit").rglob("*.py")) if "interop" not in p.parts
    ]
    return [p for p in files if "_build" not in p.parts and "_generated" not in p.parts]


@pytest.mark.parametrize("path", hinting_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_install_hints_work_from_a_checkout(path: Path) -> None:
    """``pip install "referralkit[x]"`` fails in a checkout, where referralkit is not on an
    index: wherever it is given, ``pip install ".[x]"`` is given too."""
    text = path.read_text(encoding="utf-8")
    for extra in HINT.findall(text):
        assert f'pip install ".[{extra}]"' in text or f"pip install '.[{extra}]'" in text, extra
