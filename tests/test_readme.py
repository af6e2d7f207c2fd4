"""The README's library examples run as written."""

import re

from conftest import REPO
from segmodels.encoders import ENCODERS

README = REPO / "README.md"


def library_section_code() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The library\n") : text.index("## Command line\n")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_library_examples_run(monkeypatch):
    monkeypatch.setattr(ENCODERS, "_entries", dict(ENCODERS._entries))
    blocks = library_section_code()
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["pruned"].shape == (1, 11, 360, 480)
    assert namespace["model"].pruning_depths == (1, 2)
    assert namespace["labels"].shape == (360, 480) and namespace["latency"].samples == 5
