"""Workloads: any model on data of any shape, in a fleet, with the MLP's guarantees.

The generic fleet (``training/fleet/autodiff.py``) against the reference loop in float64, a
run's float32 numbers bitwise the same at every position, fleet size and shard, bitwise resume,
the vmapped path against the per-member one; user datasets and models found beside the study,
hashed into run ids, and checked before anything is claimed.
"""

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from schedlab import data
from schedlab.cli import app
from schedlab.config.settings import TrainSettings
from schedlab.config.study import load_study
from schedlab.model.registry import resolve as resolve_model
from schedlab.plan import expand
from schedlab.schedules.registry import resolve
from schedlab.store.store import Store
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints
from schedlab.training.common import Member, build_model
from schedlab.training.fleet.autodiff import FleetModule
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.loop import train_reference

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "own_model"
SMALL_UNET = {"channels": 8, "levels": 2, "emb_size": 8}


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The example's files copied to a fresh folder, its modules importable beside it only."""
    folder = tmp_path / "own"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)  # not the study's folder: modules are found beside the study
    from schedlab import usercode

    # Study folders another test added (a copy of this example) must not shadow this one's.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in usercode.search_dirs()])
    for name in ("my_data", "my_model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(usercode, "_STUDY_DIRS", [])
    data.user_defined.cache_clear()
    from schedlab.model import registry

    registry.user_defined.cache_clear()
    yield folder
    data.user_defined.cache_clear()
    registry.user_defined.cache_clear()


def digits_images(n: int = 300) -> np.ndarray:
    return data.load("digits", n, shape=(1, 8, 8))


def unet_spec():
    return resolve_model("unet", SMALL_UNET, (1, 8, 8), "digits")


def user_spec(folder: Path):
    from schedlab import usercode

    usercode.add_study_dir(folder)
    return resolve_model("my_model:small_convnet", {"width": 8}, (1, 8, 8), "digits")


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_store_of_the_release_before_models_trains_nothing_again(tmp_path):
    """v6_store.sqlite was written by the release before models were an axis (mlp runs of
    2-D data with post-hoc EMA snapshots): its study finds every run finished."""
    fixtures = Path(__file__).parent / "fixtures"
    store = tmp_path / "v6.sqlite"
    shutil.copy(fixtures / "v6_store.sqlite", store)
    study = str(fixtures / "v6_study.toml")
    result = CliRunner().invoke(app, ["run", study, "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "4 runs planned, 4 already finished; this run: nothing" in result.stderr
    ids = {r.run_id for r in expand(load_study(study))}
    with Store(store, create=False, read_only=True) as db:
        stored = {row[0] for row in db.conn.execute("SELECT run_id FROM runs")}
    assert ids == stored


def test_digits_are_images_for_the_unet_and_vectors_for_the_mlp():
    assert data.shape("digits") == (1, 8, 8) and data.shape("moons") == (2,)
    images, vectors = data.load("digits", 7, shape=(1, 8, 8)), data.load("digits", 7)
    assert images.shape == (7, 1, 8, 8) and vectors.shape == (7, 64)
    np.testing.assert_array_equal(images.reshape(7, 64) * 4, vectors)  # pixels in [-1, 1]
    assert unet_spec().shape == (1, 8, 8)
    assert resolve_model("mlp", {}, (1, 8, 8), "digits").shape == (64,)
    with pytest.raises(ValueError, match=r"needs images \[C, H, W\]; dataset 'moons'"):
        resolve_model("unet", {}, (2,), "moons")
    with pytest.raises(ValueError, match="unknown model 'resnet'; valid models: mlp, unet"):
        resolve_model("resnet", {}, (2,), "moons")
    with pytest.raises(ValueError, match="model unet: channels must be an int"):
        resolve_model("unet", {"channels": 1.5}, (1, 8, 8), "digits")


@pytest.mark.parametrize("which", ["unet", "user"])
def test_float64_fleet_equals_the_reference_loop(which, example):
    spec = unet_spec() if which == "unet" else user_spec(example)
    settings = TrainSettings(steps=9, batch_size=64, dtype="float64", curve_every=4)
    points, schedule = digits_images(), resolve("cosine", {}, 9)
    ref = train_reference(points, schedule, settings, 2, model_spec=spec)
    fleet = train_fleet([Member(points, schedule, s, 3e-4, spec) for s in (0, 2, 5)], settings)
    np.testing.assert_allclose(fleet[1].losses, ref.losses, rtol=0, atol=1e-9)
    np.testing.assert_allclose(flat(fleet[1].model), flat(ref.model), rtol=0, atol=1e-9)
    np.testing.assert_allclose(flat(fleet[1].ema_model), flat(ref.ema_model), rtol=0, atol=1e-9)
    assert not torch.equal(flat(fleet[0].model), flat(fleet[1].model))  # seeds differ


@pytest.mark.parametrize("precision", [None, "bf16-mixed"])
def test_a_run_is_bitwise_the_same_at_every_position_fleet_size_and_shard(precision):
    spec, settings = unet_spec(), TrainSettings(steps=6, batch_size=32, precision=precision)
    points, schedule = digits_images(200), resolve("cosine", {}, 6)
    alone = train_fleet([Member(points, schedule, 4, 3e-4, spec)], settings)[0]
    for seeds, shards in (([4, 1], 1), ([0, 1, 2, 4], 2), ([4, 7, 8], 2), ([3, 2, 4], 3)):
        members = [Member(points, schedule, s, 3e-4, spec) for s in seeds]
        result = train_fleet(members, settings, shards=shards)[seeds.index(4)]
        assert np.array_equal(result.losses, alone.losses), (seeds, shards)
        assert torch.equal(flat(result.model), flat(alone.model)), (seeds, shards)
        assert torch.equal(flat(result.ema_model), flat(alone.ema_model)), (seeds, shards)


def test_resuming_a_unet_fleet_from_a_checkpoint_is_bitwise():
    spec = unet_spec()
    settings = TrainSettings(steps=9, batch_size=64, curve_every=3)
    points = digits_images()
    members = [
        Member(points, resolve(n, {}, 9), s, 1e-3, spec) for s, n in ((0, "cosine"), (1, "step"))
    ]

    def heldout(k: int, model: torch.nn.Module) -> float:
        return float(flat(model).double().square().sum())

    straight = train_fleet(members, settings, heldout_loss=heldout)
    saved: dict[int, dict[int, Checkpoint]] = {}
    policy = CheckpointPolicy(every_steps=4)
    every = Checkpoints(
        [None, None], lambda k, c: saved.setdefault(c.step, {}).__setitem__(k, c), policy
    )
    train_fleet(members, settings, heldout_loss=heldout, checkpoints=every)
    assert sorted(saved) == [4, 8, 9]
    resume = Checkpoints([saved[4][1], saved[4][0]], lambda k, c: None)
    again = train_fleet(members[::-1], settings, heldout_loss=heldout, checkpoints=resume)
    for a, b in zip(straight, again[::-1], strict=True):
        assert b.resumed_from == 4
        assert np.array_equal(a.losses, b.losses) and np.array_equal(
            a.heldout_curve, b.heldout_curve
        )
        assert torch.equal(flat(a.model), flat(b.model))
        assert torch.equal(flat(a.ema_model), flat(b.ema_model))


def test_the_vmapped_fleet_equals_the_per_member_fleet():
    torch.manual_seed(0)
    spec = unet_spec()
    models = [build_model(TrainSettings(dtype="float64"), s, model=spec) for s in range(3)]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 16, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 16, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (3, 16), generator=g)
    coefs = torch.rand(100, dtype=torch.float64), torch.rand(100, dtype=torch.float64)
    looped, vmapped = FleetModule(models, vectorized=False), FleetModule(models, vectorized=True)
    a = looped.losses_and_gradients(x0, t, eps, *coefs).clone()
    b = vmapped.losses_and_gradients(x0, t, eps, *coefs)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(looped.grad, vmapped.grad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        looped.predict(x0, t, 100), vmapped.predict(x0, t, 100), rtol=0, atol=1e-12
    )


def test_the_example_runs_reports_and_exports_from_another_folder(example, tmp_path):
    study, store = example / "study.toml", tmp_path / "own.sqlite"
    text = study.read_text().replace("steps = 300", "steps = 20").replace("seeds = 2", "seeds = 1")
    study.write_text(text)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(study), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "4 done" in result.output
    again = runner.invoke(app, ["run", str(study), "--store", str(store)])
    assert "nothing" in again.output and again.exit_code == 0
    status = runner.invoke(app, ["status", str(study), "--store", str(store)])
    assert status.exit_code == 0 and status.stdout.count("1 done") == 4
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(study), "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert "n/a" in page and "held-out eval loss, ema weights" in page.lower()
    csv = tmp_path / "runs.csv"
    result = runner.invoke(app, ["export", str(study), "--store", str(store), "--out", str(csv)])
    assert result.exit_code == 0 and csv.read_text().count("\n") == 5


def test_the_tuned_example_tunes_then_trains_its_finals(example, tmp_path):
    study = example / "tuned.toml"
    study.write_text(study.read_text().replace("steps = 200", "steps = 8"))
    store = tmp_path / "tuned.sqlite"
    result = CliRunner().invoke(app, ["run", str(study), "--store", str(store)])
    assert result.exit_code == 0, result.output
    with Store(store, create=False, read_only=True) as db:
        statuses = db.conn.execute("SELECT status, count(*) FROM runs GROUP BY 1").fetchall()
    assert statuses == [("done", 2 * 4 + 2 * 2)]  # 2 searches x 4 trials, 2 x 2 finals


def test_editing_a_user_module_changes_its_runs_ids(example):
    study = load_study(str(example / "study.toml"))
    before = {r.run_id for r in expand(study)}
    data.user_defined.cache_clear()
    from schedlab.model import registry

    registry.user_defined.cache_clear()
    model = example / "my_model.py"
    model.write_text(model.read_text().replace("self.scale = 1 /", "self.scale = 0.5 /"))
    sys.modules.pop("my_model", None)
    after = {r.run_id for r in expand(load_study(str(example / "study.toml")))}
    assert before.isdisjoint(after) and len(after) == len(before)


NOISY = "return images + rng.normal(0.0, 0.05, images.shape)"
OUT = "return self.out(torch.nn.functional.silu(h))"
BAD = {  # file, text, replacement, what the error line says
    "dataset_shape": ("my_data.py", NOISY, f"return ({NOISY[7:]})[1:]", "generated shape"),
    "dataset_nan": ("my_data.py", NOISY, NOISY.replace("images +", "np.nan * images +"), "NaN"),
    "dataset_raises": ("my_data.py", NOISY, "raise OSError('no disk')", "raised OSError: no disk"),
    "model_raises": ("my_model.py", "self.inp(x)", "self.inp(x[:, :, :, :, :])", "IndexError"),
    "model_shape": ("my_model.py", OUT, f"{OUT}.flatten(1)", "returned [2, 64]"),
    "model_nan": ("my_model.py", OUT, OUT.replace("self.out", "torch.nan * self.out"), "NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_user_module_is_one_line_exit_2_and_nothing_claimed(case, example, tmp_path):
    file, old, new, message = BAD[case]
    path = example / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    store = tmp_path / "bad.sqlite"
    result = CliRunner().invoke(app, ["run", str(example / "study.toml"), "--store", str(store)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    if store.exists():
        with Store(store, create=False, read_only=True) as db:
            assert db.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_the_api_takes_python_functions_for_datasets_and_models(example, tmp_path):
    import schedlab

    sys.path.insert(0, str(example))
    import my_data
    import my_model

    doc = {
        "name": "from-python",
        "datasets": [my_data.bars],
        "model": {"name": my_model.small_convnet, "width": 8},
        "data": {"n": 300},
        "train": {"steps": 6, "batch_size": 50},
        "eval": {"samples": 20, "heldout": 40},
        "schedules": [{"name": "cosine"}],
    }
    outcome = schedlab.run_study(doc, store=tmp_path / "py.sqlite")
    assert outcome.outcomes == {"done": 1}
    results = schedlab.load_results(study=doc, store=tmp_path / "py.sqlite")
    assert list(results["dataset"]) == ["my_data:bars"] and list(results["status"]) == ["done"]

    def local_dataset(n: int, seed: int) -> np.ndarray:
        return np.zeros((n, 2))

    with pytest.raises(ValueError, match="defined at the top level of a module"):
        schedlab.run_study({**doc, "datasets": [local_dataset]}, store=tmp_path / "no.sqlite")


def test_samples_and_eval_losses_of_a_unet_run_are_the_same_alone_or_in_a_fleet():
    from schedlab.measure.losses import reference_eval_losses
    from schedlab.measure.sampling import timed_samples
    from schedlab.model.diffusion import NoiseSchedule

    spec, settings = unet_spec(), TrainSettings()
    models = [build_model(settings, s, model=spec) for s in range(3)]
    schedule = NoiseSchedule(timesteps=10)
    drawn, _ = timed_samples(models, [0, 1, 2], schedule, 40, torch.float32, 16, (1, 8, 8))
    (alone,), _ = timed_samples(models[1:2], [1], schedule, 40, torch.float32, 16, (1, 8, 8))
    assert drawn[1].shape == (40, 1, 8, 8) and np.array_equal(drawn[1], alone)
    points = [torch.as_tensor(digits_images(100))] * 3
    together = reference_eval_losses(models, points, [0, 1, 2], schedule, 32)
    assert together[1] == reference_eval_losses(models[1:2], points[:1], [1], schedule, 32)[0]
    assert len(set(together)) == 3


def test_an_unlabelled_image_set_scores_with_its_own_feature_function(example):
    from schedlab import usercode
    from schedlab.measure import images

    usercode.add_study_dir(example)
    assert images.features_of("my_data:bars", (1, 8, 8), None) is None  # no labels, no features
    features = images.features_of("my_data:bars", (1, 8, 8), "my_data:features")
    real = data.load("my_data:bars", 3000, shape=(1, 8, 8))
    reference = images.ImageReference("my_data:bars", features, real)
    fresh = reference.scores(data.load_heldout("my_data:bars", 1000, shape=(1, 8, 8)))
    noise = reference.scores(np.random.default_rng(0).normal(size=(1000, 1, 8, 8)))
    assert math.isnan(fresh["class_kl"]) and math.isnan(noise["class_kl"])  # no labels: n/a
    assert fresh["frechet_distance"] < 0.05 < 10 * 0.05 < noise["frechet_distance"]
    assert fresh["precision"] > 0.9 > noise["precision"]
