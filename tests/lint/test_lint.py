"""yamllint and salt-lint over the whole tree."""

import subprocess

from tests.support import REPO, VENV_BIN


def run(*command):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)


def test_yamllint_passes_on_the_tree():
    listed = run(str(VENV_BIN / "yamllint"), "--list-files", ".").stdout.split()
    assert "./pillar/top.sls" in listed and "./etc/salt/master.d/gopbx.conf" in listed
    result = run(str(VENV_BIN / "yamllint"), "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_salt_lint_passes_on_every_sls():
    sls_files = sorted(str(path.relative_to(REPO)) for path in REPO.glob("**/*.sls")
                       if not {".venv", ".lab"} & set(path.relative_to(REPO).parts))
    assert "salt/top.sls" in sls_files and "pillar/top.sls" in sls_files
    result = run(str(VENV_BIN / "salt-lint"), *sls_files)
    assert result.returncode == 0, result.stdout + result.stderr
