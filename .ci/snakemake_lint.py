"""Run `snakemake --lint` from the repository root and fail on any kind of lint the README does not explain.

Snakemake 9.15 prints its lints as text (its JSON output is not reachable from the command
line), one title per lint: "    * <title>:". Two kinds are accepted, each with its reason in
README.md ("Lint gates"): every rule runs in the one pinned environment that bootstrap.sh
builds, so no rule names a conda environment or a container; and each stage's rules file
keeps the small input functions of its own rules beside them.
"""

import re
import subprocess
import sys
from pathlib import Path

EXPLAINED = {
    "Specify a conda environment or container for each rule.",
    "Mixed rules and functions in same snakefile.",
}
TITLE = re.compile(r"^\s+\* (?P<title>.+?):?$")


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([str(root / ".venv" / "bin" / "snakemake"), "--lint"], cwd=root, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "Lints for" not in output:  # not lints: the workflow itself failed to load
        print(output[-3000:], file=sys.stderr)
        return 1
    titles = [match.group("title").rstrip(":") for line in output.splitlines() if (match := TITLE.match(line))]
    unexplained = sorted({title for title in titles if title not in EXPLAINED})
    if unexplained:
        print(output, file=sys.stderr)
        print(f"snakemake --lint: {len(unexplained)} unexplained kind(s): {'; '.join(unexplained)}", file=sys.stderr)
        return 1
    print(f"snakemake --lint: {len(titles)} lint(s), all of the two explained kinds", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
