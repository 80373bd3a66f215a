"""Where nothing trains, nothing imports torch: validating a study, status, export, report."""

import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

# torch made unimportable: `import torch` anywhere raises ImportError.
SCRIPT = """
import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{{name}} imported where nothing trains")


sys.meta_path.insert(0, NoTorch())
from typer.testing import CliRunner
from schedlab.cli import app
from schedlab.config.study import load_study
from schedlab.plan import expand
from schedlab.schedules.registry import resolve
from schedlab.store.store import Store

study = load_study({study!r})
assert len(expand(study)) == 6 and resolve("step").params["gamma"] == 0.5
with Store({store!r}, create=False, read_only=True) as db:
    assert db.latest_plan("v1fixture") is not None
for args in (["status"], ["export", "--out", {csv!r}], ["report", "--out", {report!r}]):
    result = CliRunner().invoke(app, [*args, {study!r}, "--store", {store!r}])
    assert result.exit_code == 0, (args, result.output)
assert not any(name.split(".")[0] == "torch" for name in sys.modules)
print("torch-free")
"""


def test_config_plan_store_status_export_and_report_run_without_torch(tmp_path):
    code = SCRIPT.format(
        study=str(FIXTURES / "v1_study.toml"),
        store=str(FIXTURES / "v1_store.sqlite"),
        csv=str(tmp_path / "runs.csv"),
        report=str(tmp_path / "report"),
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch-free"
    assert (tmp_path / "runs.csv").read_text().count("\n") == 7
    assert (tmp_path / "report" / "index.html").exists()
