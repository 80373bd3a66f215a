"""Budgets as an axis and cooldown branches from a constant-LR trunk: what a study plans, the
branch bitwise equal to its schedule trained straight through, branches waiting for their
trunk's checkpoint, the checkpoint freed after the last branch, kill -9 in between, and the
compute the report says each strategy spent."""

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from schedlab.config.budgets import branch_step
from schedlab.config.study import parse_study
from schedlab.execute.driver import Driver
from schedlab.execute.local import run_study
from schedlab.execute.sweep import sweep_study
from schedlab.metrics import METRICS
from schedlab.plan import expand
from schedlab.report.budgets import compute_spent
from schedlab.report.build import build_report
from schedlab.report.data import load_study_view
from schedlab.store.arrays import decode_array
from schedlab.store.records import Commit
from schedlab.store.status import RunStatus
from schedlab.store.store import Store

SETTINGS = """[data]
n = 2000
[train]
batch_size = 128
emb_size = 16
hidden_size = 32
hidden_layers = 2
curve_every = 20
[eval]
samples = 200
heldout = 300
"""
BRANCHES = """[[schedules]]
name = "cosine"
[[schedules]]
name = "constant"
params = { warmup_steps = 10 }
[[schedules]]
name = "wsd"
label = "sqrt"
branch = { from = "constant", cooldown = 0.25, shape = "1-sqrt" }
[[schedules]]
name = "wsd"
label = "linear"
branch = { from = "constant", cooldown = 0.5, shape = "linear" }
"""


def study_text(seeds=1, small=120, large=200, posthoc="true"):
    """A budgets study; its trunk tracks post-hoc EMAs (its branches do not)."""
    return (
        f'name = "budgets"\ndatasets = ["moons"]\nseeds = {seeds}\n'
        f"[budgets]\nsteps = [{small}, {large}]\n{SETTINGS}"
        f"[ema]\nposthoc = {posthoc}\nsnapshots = 5\n{BRANCHES}"
    )


def straight_text(schedule: str, steps: int) -> str:
    """One schedule trained straight through for ``steps``, with the budgets study's settings."""
    settings = SETTINGS.replace("[train]\n", f"[train]\nsteps = {steps}\n")
    return f'name = "budgets"\ndatasets = ["moons"]\n{settings}{schedule}\n'


def by_label(store: Store, study: str) -> dict[str, str]:
    plan_id, _ = store.latest_plan(study)
    return {label: run_id for label, run_id in store.plan_pairs(plan_id)}


def trained(store: Store, run_id: str) -> tuple[bytes, ...]:
    row = store.conn.execute(
        "SELECT c.loss, c.lr, c.heldout, w.raw, w.ema FROM curves c JOIN weights w "
        "USING (run_id) WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return tuple(row)


TRUNK = 'from = "constant", cooldown = 0.25'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[budgets]\nsteps = [120, 200]\n", "", "which needs [budgets]"),
        (TRUNK, TRUNK.replace("constant", "nope"),
         "branches from 'nope', not a schedule of this study; schedules: cosine, constant"),
        (TRUNK, TRUNK.replace("constant", "cosine"), "a cosine schedule; a trunk must be constant"),
        ('name = "wsd"\nlabel = "sqrt"', 'name = "cosine"\nlabel = "sqrt"',
         "it trains wsd with the cooldown and shape under branch"),
        ("[train]\n", "[train]\nsteps = 100\n",
         "[budgets] sets every run's steps: leave steps out of [train]"),
        ("cooldown = 0.5", "cooldown = 1.5", "less than 1"),
        ('shape = "linear"', 'shape = "square"', "'linear', '1-sqrt' or 'cosine'"),
        ("steps = [120, 200]", "steps = [200, 200]", "distinct step counts"),
        ("steps = [120, 200]", "steps = [11, 200]",
         "schedule 'sqrt': a cooldown of 0.25 of 11 steps leaves no flat step after the warm-up"),
        ("[ema]", "[tune]\ntrials = 2\n[ema]", "cannot have [tune]"),
    ],
)  # fmt: skip
def test_a_bad_budgets_study_is_one_line_naming_the_problem(old, new, message):
    with pytest.raises(ValueError, match=r"^budgets\.toml: ") as err:
        parse_study(study_text().replace(old, new), "budgets.toml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_plan_trains_each_schedule_per_budget_and_the_trunk_once():
    study = parse_study(study_text(), "budgets.toml")
    runs = expand(study)
    assert [r.label for r in runs] == [
        "cosine @ 120", "cosine @ 200", "constant @ 120", "constant @ 200",
        "sqrt @ 120", "sqrt @ 200", "linear @ 120", "linear @ 200",
    ]  # fmt: skip
    at = {r.label: r for r in runs}
    trunk = at["constant @ 200"]
    assert trunk.branch is None and trunk.budget == 200
    # Branch steps, budget - round(cooldown x (budget - warm-up)): 120 - round(0.5 x 110),
    # 120 - round(0.25 x 110), 200 - round(0.5 x 190), the trunk read at 120, and
    # 200 - round(0.25 x 190) (Python rounds half to even: 27.5 -> 28, 47.5 -> 48).
    assert trunk.keep_at == (65, 92, 105, 120, 152)
    assert (at["sqrt @ 120"].branch.parent, at["sqrt @ 120"].branch.step) == (trunk.run_id, 92)
    assert at["linear @ 200"].branch.step == 105 == branch_step(200, 0.5, 10)
    assert at["constant @ 120"].branch.step == 120
    assert at["sqrt @ 200"].schedule.params["warmup_steps"] == 10  # the trunk's warm-up
    assert not at["sqrt @ 200"].settings.ema.posthoc and trunk.settings.ema.posthoc
    # A schedule per budget is the very run a study of that length trains.
    plain = parse_study(straight_text('[[schedules]]\nname = "cosine"', 120), "plain.toml")
    untracked = expand(parse_study(study_text(posthoc="false"), "budgets.toml"))
    assert untracked[0].label == "cosine @ 120" and untracked[0].run_id == expand(plain)[0].run_id


@pytest.fixture(scope="module")
def budgets_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("budgets") / "b.sqlite"
    with Store(path) as db:
        run_study(parse_study(study_text(), "budgets.toml"), db, fleet_size=4)
    return path


def test_a_branch_equals_its_schedule_trained_straight_through(budgets_store, tmp_path):
    wsd = '[[schedules]]\nname = "wsd"\nparams = {{ decay_fraction = {c}, decay_shape = "{s}", end_factor = 0.0, warmup_steps = 10 }}'  # noqa: E501
    straight = {
        "sqrt @ 200": straight_text(wsd.format(c=0.25, s="1-sqrt"), 200),
        "linear @ 120": straight_text(wsd.format(c=0.5, s="linear"), 120),
        "constant @ 120": straight_text(
            '[[schedules]]\nname = "constant"\nparams = { warmup_steps = 10 }', 120
        ),
    }
    with Store(budgets_store) as db:
        ids = by_label(db, "budgets")
        branched = {label: trained(db, ids[label]) for label in straight}
        resumed = {label: db.status(ids[label]) for label in straight}
        starts = dict(db.conn.execute("SELECT run_id, resumed_from FROM runs"))
    assert set(resumed.values()) == {RunStatus.DONE}
    # Each branch started from the trunk's checkpoint, and trained only what followed it.
    assert [starts[ids[label]] for label in straight] == [152, 65, 120]
    for i, (label, text) in enumerate(straight.items()):
        with Store(tmp_path / f"s{i}.sqlite") as db:
            run_study(parse_study(text, "plain.toml"), db)
            (run_id,) = by_label(db, "budgets").values()
            assert trained(db, run_id) == branched[label], label  # bit for bit


def test_the_trunks_checkpoints_are_freed_once_their_branches_committed(budgets_store):
    with Store(budgets_store) as db:
        points = db.conn.execute(
            "SELECT step, state IS NULL, training_time FROM branch_points ORDER BY step"
        ).fetchall()
        assert db.conn.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)
    assert [p[0] for p in points] == [65, 92, 105, 120, 152]
    assert all(freed and seconds > 0 for _, freed, seconds in points)  # its time stays


def test_the_compute_figures_are_the_steps_and_seconds_in_the_store(budgets_store):
    with Store(budgets_store, read_only=True) as db:
        view = load_study_view(db, "budgets")
        spent = compute_spent(view, db)
        ids = by_label(db, "budgets")
        rows = {
            run_id: (len(decode_array(loss)), start or 0, seconds)
            for run_id, loss, start, seconds in db.conn.execute(
                "SELECT r.run_id, c.loss, r.resumed_from, r.training_time FROM runs r "
                "JOIN curves c USING (run_id)"
            )
        }
        at_point = dict(
            db.conn.execute(
                "SELECT b.run_id, p.training_time FROM branches b JOIN branch_points p "
                "ON p.run_id = b.parent AND p.step = b.step"
            )
        )
    trunk = rows[ids["constant @ 200"]]

    def own(label):  # steps a run trained itself (after where it started), and its seconds
        steps, start, seconds = rows[ids[label]]
        return steps - start, seconds - at_point.get(ids[label], 0.0)

    assert spent["cosine"].steps == 120 + 200 == spent["cosine"].expected_steps
    assert spent["cosine"].seconds == pytest.approx(own("cosine @ 120")[1] + own("cosine @ 200")[1])
    assert spent["constant"].steps == 200 + 0 == trunk[0]
    for label, cooldowns in (("sqrt", 28 + 48), ("linear", 55 + 95)):
        own_steps = own(f"{label} @ 120")[0] + own(f"{label} @ 200")[0]
        assert own_steps == cooldowns
        assert spent[label].steps == 200 + cooldowns == spent[label].expected_steps
        seconds = trunk[2] + own(f"{label} @ 120")[1] + own(f"{label} @ 200")[1]
        assert spent[label].seconds == pytest.approx(seconds)


def test_the_budgets_section_reads_every_strategy_at_every_budget(budgets_store, tmp_path):
    with Store(budgets_store, read_only=True) as db:
        index = build_report(db, "budgets", tmp_path / "report").index
    page = index.read_text()
    section = page[page.index('id="budgets"') : page.index("<h2", page.index('id="budgets"'))]
    for text in (
        "One run, every budget",
        "constant (trunk: trained once to the largest budget, read at each)",
        "sqrt (cooldown of 25% (1-sqrt) branched from constant)",
        "120 steps",
        "the baseline",
        "Compute spent for every budget",
    ):
        assert text in section, text
    assert "cosine at the same budget" in page


def test_the_trunk_plus_ema_at_a_budget_is_the_ema_a_run_of_that_length_has(
    budgets_store, tmp_path
):
    heldout = METRICS["eval_loss_heldout_ema"]
    store = tmp_path / "swept.sqlite"
    shutil.copy(budgets_store, store)
    with Store(store) as db:
        outcome = sweep_study(parse_study(study_text(), "budgets.toml"), db, [0.05, 0.1], [heldout])
        ids = by_label(db, "budgets")
        swept = {(r, std): v for r, std, _, _, v in db.sweep(ids.values())}
    # Every run tracked EMAs but the branches and the trunk read at 120, which reads its trunk's.
    assert outcome.runs == 4 and (ids["constant @ 120"], 0.05) in swept
    # A constant LR trained for 120 steps, tracking the same EMAs: its EMA at its end.
    text = straight_text('[[schedules]]\nname = "constant"\nparams = { warmup_steps = 10 }', 120)
    text += "[ema]\nposthoc = true\nsnapshots = 5\n"
    with Store(tmp_path / "straight.sqlite") as db:
        study = parse_study(text, "plain.toml")
        run_study(study, db)
        sweep_study(study, db, [0.05, 0.1], [heldout])
        rows = db.sweep(by_label(db, "budgets").values())
    assert len(rows) == 2
    for _, std, _, _, value in rows:
        assert swept[(ids["constant @ 120"], std)] == pytest.approx(value, rel=1e-5)
    with Store(store, read_only=True) as db:
        page = build_report(db, "budgets", tmp_path / "report").index.read_text()
    row = page[page.index("constant + post-hoc EMA") :].split("</tr>")[0]
    assert "length 0.05" in row or "length 0.1" in row
    assert "not cross-fitted" in row  # one seed
    assert row.count(": inconclusive") == 2  # against cosine + its post-hoc EMA, at 2 budgets
    baseline = page[page.index("cosine + post-hoc EMA") :].split("</tr>")[0]
    assert baseline.count(": the baseline") == 2


def commit(resumed_from: int = 0) -> Commit:
    return Commit(
        status=RunStatus.DONE,
        training_time=1.0,
        losses=np.zeros(3),
        lrs=np.zeros(3),
        heldout_curve=np.zeros((0, 2)),
        weights=None,
        measurements={},
        samples=None,
        resumed_from=resumed_from,
    )


def test_a_branch_waits_for_its_trunks_checkpoint_and_frees_it_when_the_last_commits(tmp_path):
    study = parse_study(study_text(seeds=1), "budgets.toml")
    runs = expand(study)
    at = {r.label: r for r in runs}
    trunk = at["constant @ 200"]
    with Store(tmp_path / "w.sqlite") as db:
        driver = Driver(db)
        driver.register(study, runs)
        waiting = {"constant @ 120", "sqrt @ 120", "sqrt @ 200", "linear @ 120", "linear @ 200"}
        assert {r.label for r in driver._claimable(runs, set())} == set(at) - waiting
        assert db.claim(trunk.run_id, "elsewhere:1:a", 60, "elsewhere", {})  # training
        assert {r.label for r in driver._claimable(runs, set())} == {"cosine @ 120", "cosine @ 200"}
        db.save_checkpoint(trunk.run_id, 92, b"trunk at 92", training_time=2.5)
        db.save_checkpoint(trunk.run_id, 100, b"trunk at 100")  # no branch starts here
        ready = [r for r in driver._claimable(runs, set()) if r.branch]
        assert [r.label for r in ready] == ["sqrt @ 120"]
        assert driver._starts(ready) == {at["sqrt @ 120"].run_id: 92}
        assert db.branch_point(trunk.run_id, 92) == b"trunk at 92"
        # The branch commits: the only branch from step 92, so its checkpoint is freed.
        branch = at["sqrt @ 120"].run_id
        assert db.claim(branch, driver.owner, 60, "here", {})
        assert db.finish(branch, driver.owner, commit(92))
        assert db.branch_point(trunk.run_id, 92) is None
        assert db.branch_origins([branch]) == {branch: (trunk.run_id, 92, 2.5)}
        # Kept while any branch from it has not committed (a failed one will try again).
        db.save_checkpoint(trunk.run_id, 120, b"trunk at 120", training_time=3.0)
        assert db.claim(at["constant @ 120"].run_id, driver.owner, 60, "here", {})
        assert db.mark_failed(at["constant @ 120"].run_id, driver.owner, "boom")
        assert db.branch_point(trunk.run_id, 120) == b"trunk at 120"
        # The trunk fails: its branches no longer wait; those without a kept checkpoint start
        # from step 0 (the same numbers: before its branch step a branch's LR is the trunk's).
        assert db.mark_failed(trunk.run_id, "elsewhere:1:a", "lost")
        left = [r for r in driver._claimable(runs, set()) if r.branch]
        assert {r.label for r in left} == waiting - {"sqrt @ 120"}
        assert driver._starts(left) == {at["constant @ 120"].run_id: 120}


def kill_when_a_branch_point_is_kept(command, store):
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30) as c:
                kept = c.execute(
                    "SELECT count(*) FROM branch_points WHERE state IS NOT NULL"
                ).fetchone()[0]
                branched = c.execute(
                    "SELECT count(*) FROM branches b JOIN runs r USING (run_id) "
                    "WHERE r.status != 'pending'"
                ).fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            kept = branched = 0
        if kept:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return branched
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no branch point was kept")


@pytest.mark.slow
def test_kill_9_between_a_trunks_checkpoint_and_its_branches_loses_nothing(tmp_path):
    study = tmp_path / "budgets.toml"
    study.write_text(study_text(seeds=2, small=400, large=800, posthoc="false"))
    straight, killed = tmp_path / "straight.sqlite", tmp_path / "killed.sqlite"

    def command(store):
        return [sys.executable, "-m", "schedlab", "run", str(study), "--store", str(store)]

    subprocess.run(command(straight), check=True, capture_output=True, timeout=600)
    assert kill_when_a_branch_point_is_kept(command(killed), killed) == 0
    moments = random.Random(20261206)
    for _ in range(2):  # then at random moments: a branch may be cut mid-cooldown
        proc = subprocess.Popen(command(killed), stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=moments.uniform(2.0, 4.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    subprocess.run(command(killed), check=True, capture_output=True, timeout=600)
    with Store(straight) as a, Store(killed) as b:
        ids = by_label(a, "budgets")
        assert ids == by_label(b, "budgets")
        for label, run_id in ids.items():
            assert trained(a, run_id) == trained(b, run_id), label
        assert {s for (s,) in b.conn.execute("SELECT status FROM runs")} == {"done"}
        # Every branch started from the trunk's kept checkpoint (the one before the first kill
        # too), or from a later one of its own.
        starts = b.conn.execute(
            "SELECT b.step, r.resumed_from FROM branches b JOIN runs r USING (run_id)"
        ).fetchall()
        assert len(starts) == 2 * 5 and all(step <= start for step, start in starts)
        assert b.conn.execute(
            "SELECT count(*) FROM branch_points WHERE state IS NOT NULL"
        ).fetchone() == (0,)
