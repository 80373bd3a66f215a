"""The Ray executor on a local 2-node cluster (loopback only): the same numbers as the local
executor, a node lost mid-study, a fleet that fails alone. About a minute in all."""

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

# Keep Ray on 127.0.0.1 (set before Ray starts).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
USER_SCHEDULES = Path(__file__).parent / "fixtures" / "user_schedules"

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from schedlab.cli import app  # noqa: E402
from schedlab.config.study import parse_study  # noqa: E402
from schedlab.execute.local import run_study as run_locally  # noqa: E402
from schedlab.execute.ray_executor import RayExecutor  # noqa: E402
from schedlab.execute.ray_executor import run_study_on_ray as run_on_ray  # noqa: E402
from schedlab.tuning.search import tune_study  # noqa: E402


def run_study(study, db, **kwargs):
    return run_locally(study, db, tune=tune_study, **kwargs)


def run_study_on_ray(study, db, **kwargs):
    return run_on_ray(study, db, tune=tune_study, **kwargs)


from schedlab.store.store import Store  # noqa: E402

pytestmark = pytest.mark.slow
runner = CliRunner()

# The small model and data every study here trains.
SETTINGS = """[data]
n = 1200
[train]
batch_size = 100
emb_size = 8
hidden_size = 16
hidden_layers = 1
[eval]
samples = 120
heldout = 200
"""
STUDY = (
    'name = "onray"\ndatasets = ["moons", "line"]\nseeds = 2\n'
    + SETTINGS.replace("[train]\n", "[train]\nsteps = {steps}\n")
    + '[[schedules]]\nname = "cosine"\n[[schedules]]\nname = "step"\n'
    + "params = {{ step_size = 20, gamma = 0.5 }}\n"
)


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each, on 127.0.0.1; their workers can import the
    test's user schedule (they inherit PYTHONPATH as the nodes start)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(USER_SCHEDULES), before) if p)
    try:
        nodes = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        extra = nodes.add_node(num_cpus=1)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes, extra
    ray.shutdown()
    nodes.shutdown()


def stored(path):
    """Every stored number that does not measure time, and every run's attempts."""
    with sqlite3.connect(path) as c:
        values = c.execute(
            "SELECT run_id, metric, value FROM measurements "
            "WHERE metric NOT IN ('training_time', 'inference_time') ORDER BY 1, 2"
        ).fetchall()
        arrays = c.execute("SELECT * FROM curves ORDER BY 1").fetchall()
        weights = c.execute("SELECT * FROM weights ORDER BY 1").fetchall()
        runs = c.execute("SELECT run_id, status, attempts FROM runs ORDER BY 1").fetchall()
    return values, arrays, weights, runs


def test_a_study_on_two_nodes_equals_the_local_executors(cluster, tmp_path):
    study = parse_study(STUDY.format(steps=40), "s.toml")
    with Store(tmp_path / "local.sqlite") as db:
        run_study(study, db, fleet_size=2)
    with Store(tmp_path / "ray.sqlite") as db:
        outcome = run_study_on_ray(study, db, fleet_size=2)
    assert outcome.outcomes == {"done": 8}
    # Both nodes trained: one line of throughput each.
    assert len([n for n in outcome.notes if n.startswith("node ")]) == 2
    local, on_ray = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
    assert on_ray[0] == local[0] and len(local[0]) > 8 * 10  # every metric, bit for bit
    assert on_ray[1] == local[1] and on_ray[2] == local[2]  # curves and weights too
    assert {(status, attempts) for _, status, attempts in on_ray[3]} == {("done", 1)}


BUDGETS = (
    'name = "budgets"\ndatasets = ["moons"]\nseeds = 2\n[budgets]\nsteps = [30, 60]\n'
    + SETTINGS
    + """[[schedules]]
name = "cosine"
[[schedules]]
name = "constant"
[[schedules]]
name = "wsd"
label = "cooldown"
branch = { from = "constant", cooldown = 0.2, shape = "1-sqrt" }
"""
)


def test_a_budgets_study_on_two_nodes_equals_the_local_executors(cluster, tmp_path):
    study = parse_study(BUDGETS, "budgets.toml")
    with Store(tmp_path / "local.sqlite") as db:
        run_study(study, db, fleet_size=2)
    with Store(tmp_path / "ray.sqlite") as db:
        outcome = run_study_on_ray(study, db, fleet_size=2)
        starts = db.conn.execute(
            "SELECT b.step, r.resumed_from FROM branches b JOIN runs r USING (run_id)"
        ).fetchall()
    assert outcome.outcomes == {"done": 2 * 6}
    local, on_ray = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
    assert on_ray == local  # every metric, curve and weight, bit for bit
    # The branches started from the trunk's checkpoints, sent by its task to the driver.
    assert len(starts) == 2 * 3 and all(step == start for step, start in starts)


def test_a_tuned_study_on_the_cluster_asks_and_chooses_what_a_local_one_does(cluster, tmp_path):
    text = (Path(__file__).parent / "fixtures" / "tiny_tuned.toml").read_text()
    study = parse_study(text.replace('["moons", "line"]', '["moons"]'), "t.toml")
    with Store(tmp_path / "local.sqlite") as db:
        run_study(study, db, fleet_size=4)
    with Store(tmp_path / "ray.sqlite") as db:
        outcome = run_study_on_ray(study, db, fleet_size=4)
    assert outcome.outcomes == {"done": 8 + 6}  # 2 searches x 4 trials; 3 schedules x 2 seeds
    local, on_ray = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
    assert on_ray[0] == local[0] and on_ray[2] == local[2]


def test_fleets_fill_the_slots_in_equal_rounds(cluster):
    executor = RayExecutor()
    assert executor.slots.count == 2 and executor.slots.cpus == 1
    assert executor.fleet_size(8, 20) == 4  # two fleets of 4, not 8 on one node
    assert executor.fleet_size(48, 20) == 12  # 4 fleets: two rounds, no lone tail fleet
    assert executor.fleet_size(1, 20) == 1 and executor.fleet_size(0, 20) == 1
    with pytest.raises(ValueError, match="--device cuda asked for, but the Ray cluster has no GPU"):
        RayExecutor("cuda")


def test_a_fleet_that_raises_fails_its_own_runs_only(cluster, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(USER_SCHEDULES))  # the driver validates it too
    text = STUDY.format(steps=20) + '[[schedules]]\nname = "broken_schedule:late"\n'
    study = parse_study(text.replace('["moons", "line"]', '["moons"]'), "s.toml")
    with Store(tmp_path / "s.sqlite") as db:
        outcome = run_study_on_ray(study, db, fleet_size=2)
    assert outcome.outcomes == {"done": 4, "failed": 2}
    runs = sqlite3.connect(tmp_path / "s.sqlite").execute(
        "SELECT schedule, status, error FROM runs"
    )
    failed = {(s, e) for s, status, e in runs if status == "failed"}
    assert failed == {
        (
            "broken_schedule:late",
            "schedule 'broken_schedule:late' (no parameters) failed: RuntimeError: this "
            "schedule breaks at step 4 on purpose",
        )
    }


def test_the_cli_runs_a_study_on_the_cluster_it_is_given(cluster, tmp_path):
    nodes, _ = cluster
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(steps=20).replace('["moons", "line"]', '["moons"]'))
    store = str(tmp_path / "s.sqlite")
    args = ["run", str(path), "--store", store, "--executor", "ray", "--address", nodes.address]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 runs planned, 0 already finished; this run: 4 done" in result.stderr
    assert "note: node " in result.stderr  # per-node throughput


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "dask"], "error: unknown executor 'dask'; valid executors: local, ray"),
        (["--address", "127.0.0.1:1"], "error: --address joins a Ray cluster: it needs"),
    ],
)
def test_executor_options_are_checked(args, message):
    result = runner.invoke(app, ["run", "quick", *args])
    assert result.exit_code == 2 and result.stderr.startswith(message)


def running(path):
    """How many runs the store says are running (0 before the driver made the store)."""
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as c:
        try:
            return c.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def checkpointed(path):
    """run id -> step of its stored checkpoint."""
    with sqlite3.connect(path, timeout=30) as c:
        try:
            return dict(c.execute("SELECT run_id, step FROM checkpoints").fetchall())
        except sqlite3.OperationalError:  # the schema is not there yet
            return {}


def test_a_node_lost_mid_study_resumes_its_fleet_from_the_last_checkpoint(cluster, tmp_path):
    nodes, extra = cluster
    study = parse_study(STUDY.format(steps=8000), "s.toml")
    path = tmp_path / "s.sqlite"
    result = {}

    def drive():
        with Store(path) as db:
            result["outcome"] = run_study_on_ray(study, db, fleet_size=4, checkpoint_every=250)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    deadline = time.monotonic() + 120
    # Both fleets (one on each node) have sent a checkpoint the driver stored.
    while len(checkpointed(path)) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    nodes.remove_node(extra)
    driver.join(timeout=240)
    assert result["outcome"].outcomes == {"done": 8}
    # The lost node's fleet was trained on by the head: only the head returned results.
    assert len([n for n in result["outcome"].notes if n.startswith("node ")]) == 1
    runs = stored(path)[3]
    assert {(status, attempts) for _, status, attempts in runs} == {("done", 1)}
    with sqlite3.connect(path) as c:
        resumed = sorted(s for (s,) in c.execute("SELECT resumed_from FROM runs"))
        assert c.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)
    assert resumed[:4] == [0] * 4 and all(s > 0 and s % 250 == 0 for s in resumed[4:]), resumed
    with Store(tmp_path / "straight.sqlite") as db:
        run_study(study, db, fleet_size=4)
    assert stored(path)[:3] == stored(tmp_path / "straight.sqlite")[:3]


def test_a_study_of_user_modules_beside_its_file_trains_on_two_nodes(
    cluster, tmp_path, monkeypatch
):
    """The own-model example: its dataset and model modules sit beside the study file, on no
    worker's path; the tasks find them where the driver does, with the local executor's numbers."""
    import shutil
    import sys

    from schedlab import usercode
    from schedlab.config.study import load_study

    monkeypatch.setattr(sys, "path", list(sys.path))  # the study's folder goes on it
    monkeypatch.setattr(usercode, "_STUDY_DIRS", [])
    for name in ("my_data", "my_model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    folder = tmp_path / "own"
    shutil.copytree(Path(__file__).parents[1] / "docs" / "examples" / "own_model", folder)
    study_file = folder / "study.toml"
    text = study_file.read_text().replace("steps = 300", "steps = 12")
    study_file.write_text(text.replace("seeds = 2", "seeds = 1"))
    study = load_study(str(study_file))
    with Store(tmp_path / "local.sqlite") as db:
        run_study(study, db, fleet_size=2)
    with Store(tmp_path / "ray.sqlite") as db:
        outcome = run_study_on_ray(study, db, fleet_size=2)
    assert outcome.outcomes == {"done": 4}
    assert stored(tmp_path / "ray.sqlite")[:3] == stored(tmp_path / "local.sqlite")[:3]


LOCAL_INSTANCE = """
import time, psutil, ray
from schedlab.execute.ray_executor import connected
try:
    with connected(None):
        ray.remote(lambda: time.sleep(60)).remote()  # a worker starts, and the agents
        time.sleep(1)
        print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
        raise KeyboardInterrupt  # Ctrl-C while the task trains
except KeyboardInterrupt:
    pass
"""


def test_an_interrupted_local_ray_instance_stops_every_process_it_started():
    import subprocess
    import sys

    import psutil

    # A local instance of its own, not the module's cluster (which `ray.init()` would join).
    env = {**os.environ, "RAY_ADDRESS": "local"}
    out = subprocess.run(
        [sys.executable, "-c", LOCAL_INSTANCE], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    started = [int(pid) for pid in out.stdout.split()]
    assert len(started) >= 3  # the GCS, the raylet, its agents and workers
    alive = [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == []
