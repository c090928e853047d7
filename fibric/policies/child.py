"""Child-process entry point of the Rego unit-test runner (see testing.py for why).

Reads `{"modules": [[name, source], ...]}` on stdin and writes either
`{"results": [...]}` or `{"problems": [...]}` (the modules do not compile) on
stdout. If rego-cpp crashes, the parent sees the signal instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from fibric import errors
from fibric.policies import compiler, testing


def main() -> int:
    request = json.load(sys.stdin)
    modules = [compiler.Module(name, source) for name, source in request["modules"]]
    # Rego's print() writes to file descriptor 1 from C; send it to stderr so stdout carries only the answer.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    with answer:
        try:
            report = testing.run_tests(modules, isolated=False)
        except errors.SpecInvalid as e:
            json.dump({"problems": [dataclasses.asdict(p) for p in e.problems]}, answer)
            return 0
        json.dump(report.to_dict(), answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
