"""The README's API example, executed exactly as the README prints it."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def readme_python_example() -> str:
    """The one ```python block of the README's API section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_python_example())
    r = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, text=True, cwd=tmp_path,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    # What the comments in the example promise: one die roll on COM1, a power-off, the dice
    # device's one access in the statistics.
    assert re.search(r"^[1-6]$", r.stdout, re.M), r.stdout
    assert re.search(r"^End.POWEROFF 0$", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+dice\s+1$", r.stdout, re.M), r.stdout
