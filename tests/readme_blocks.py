"""The README's fenced code blocks, read as a new operator reads them: which to type in which
terminal, and what each one says it prints (for tests/test_readme_first_run.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
# A python block that opens with `# NAME.py: ...` is saved as NAME.py, as the text around it says.
SAVED_AS = re.compile(r"\A# ([\w-]+\.py):")
# An expected answer under a command: `# {...}` or `# OK ...`; `...` stands for anything.
EXPECTED = re.compile(r"^# ((?:\{|OK ).*)$", re.M)


@dataclass(frozen=True)
class Block:
    language: str
    code: str

    @property
    def serves(self) -> bool:
        """Runs `walletd serve` in the foreground: it has a terminal of its own."""
        return any(line.rstrip().endswith("walletd serve") for line in self.code.splitlines())

    @property
    def saved_as(self) -> str | None:
        match = SAVED_AS.match(self.code)
        return match[1] if match and self.language == "python" else None

    def expected(self) -> list[re.Pattern[str]]:
        """What the block says it prints, in order, each as a pattern over the output."""
        return [re.compile(".*?".join(re.escape(part) for part in text.split("...")), re.S)
                for text in EXPECTED.findall(self.code)]


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading` up to the next heading of that level."""
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end != -1 else len(markdown)]


def blocks(markdown: str, headings: tuple[str, ...]) -> list[Block]:
    return [Block(match[1], match[2]) for heading in headings for match in FENCE.finditer(section(markdown, heading))]


def unmatched(output: str, expected: list[re.Pattern[str]]) -> list[str]:
    """The expected answers not found in output in their order (curl prints no newline, so
    answers are searched for in the whole text, each after the one before)."""
    missing, position = [], 0
    for pattern in expected:
        found = pattern.search(output, position)
        if found is None:
            missing.append(pattern.pattern)
        else:
            position = found.end()
    return missing
