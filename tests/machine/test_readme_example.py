"""The README's API example runs as documented."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_api_demo_script_runs():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "api_demo.py")], capture_output=True,
                       timeout=60, text=True)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^the guest rolled: [1-6]$", r.stdout, re.M)
    assert "poweroff 0" in r.stdout
    assert re.search(r"dice\s+1$", r.stdout, re.M)


def test_readme_example_matches_the_script():
    readme = (REPO / "README.md").read_text()
    script = (REPO / "scripts" / "api_demo.py").read_text()
    guest = re.search(r'bytes\.fromhex\("([0-9a-f]+)"\)', readme).group(1)
    assert f'bytes.fromhex("{guest}")' in script
