"""Time `schedlab report` on a synthetic 60-run store shaped like the paper study.

    python benchmarks/report.py [--json FILE]

Prints the seconds to build the report (tables, statistics, figures, HTML) and, as the issue's
target, the ratio to 10 s. The store holds 10,000-step curves and 10,000 samples per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from schedlab.report.build import build_report
from schedlab.store.store import Store
from schedlab.testing import synthetic_store

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_store(Path(tmp) / "synthetic.sqlite")
        with Store(path, create=False) as db:
            start = time.perf_counter()
            build_report(db, "synthetic", Path(tmp) / "report", compare_paper=True)
            seconds = time.perf_counter() - start
    print(
        f"report of a 60-run store: {seconds:.2f} s (target {TARGET_S:.0f} s: "
        f"{seconds / TARGET_S:.2f} of the budget)"
    )
    if args.json:
        args.json.write_text(json.dumps({"report_seconds": seconds, "runs": 60}))


if __name__ == "__main__":
    main()
