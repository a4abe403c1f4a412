"""The security gate of `make test`: bandit over our code, pip-audit over what is installed.

bandit fails the build on any finding of medium severity or above (any confidence). Below that
it reports only asserts used for type narrowing, `random` for shuffling data (not secrets), and
"hardcoded password" guesses on empty form defaults; each medium one is fixed or, where bandit
cannot see that it is safe, marked `# nosec <id>` with the reason on the line above.

pip-audit fails the build on any known vulnerability. Where no vulnerability data can be
reached (no network, or a package mirror without PyPI's JSON API), it audits nothing; then this
says so and passes, rather than reporting "no known vulnerabilities".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AUDIT_TIMEOUT_S = 300


def bandit() -> bool:
    command = [BIN / "bandit", "-q", "-r", "app", "worker", "--severity-level", "medium"]
    return subprocess.run(command, cwd=ROOT).returncode == 0


def pip_audit() -> bool:
    command = [BIN / "pip-audit", "--progress-spinner", "off", "--skip-editable", "-f", "json"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S, cwd=ROOT
        )
        report = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        print(f"pip-audit skipped: no vulnerability data could be reached ({exc})")
        return True
    dependencies = report["dependencies"]
    audited = [dep for dep in dependencies if "skip_reason" not in dep]
    vulnerable = [dep for dep in audited if dep.get("vulns")]
    for dep in vulnerable:
        ids = ", ".join(vuln["id"] for vuln in dep["vulns"])
        print(f"pip-audit: {dep['name']} {dep['version']} has known vulnerabilities: {ids}")
    if not audited:
        print(
            f"pip-audit skipped: no vulnerability data could be reached for any of the "
            f"{len(dependencies)} installed packages"
        )
    else:
        print(
            f"pip-audit: {len(audited)} of {len(dependencies)} packages audited, "
            f"{len(vulnerable)} with known vulnerabilities"
        )
    return not vulnerable


if __name__ == "__main__":
    results = [bandit(), pip_audit()]
    sys.exit(0 if all(results) else 1)
