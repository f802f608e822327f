"""The README's two commands are exactly what CI runs."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_commands():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    blocks = _bash_blocks(readme)
    install, test = blocks[0], blocks[1]
    assert "\n" not in install and "\n" not in test, "README install/test must be one line each"
    ci_lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith(("#", "echo", "set ", "cd ", "export "))]
    # setup steps between install and test: `bash tools/<script>.sh` that the README names
    setup = [ln for ln in ci_lines[1:-1] if re.fullmatch(r"bash tools/[\w.-]+\.sh", ln) and ln.split()[1] in readme]
    assert ci_lines == [install, *setup, test]
    for ln in setup:
        assert os.path.exists(os.path.join(ROOT, ln.split()[1])), ln
