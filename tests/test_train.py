"""cxr_utils.train: run folders, the best checkpoint chosen on validation, resume/restart, reload, export.

Every run here is tiny (a stratified subset of the real curated images, a few epochs of the small
``improved`` network), in a temporary ``CXR_RUNS_DIR``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from cxr_utils import CLASSES, losses, paths, predictions, runs, schedules, train
from cxr_utils import data as cxr_data

SUBSET = 96  # images per split: 3 training batches of 32
TINY = {"epochs": 4, "subset": SUBSET, "image_size": 64}  # the improved recipe, small and quick (conftest.py)
SMALL = {"epochs": 2, "subset": 64, "image_size": 32}  # smaller still, for what needs no comparison with tiny_run


@pytest.fixture(scope="module")
def runs_dir(curated_data_dir):
    """The session's own runs folder (CXR_RUNS_DIR, a temporary folder; see conftest.py)."""
    return paths.runs_dir()


class StopAfter(keras.callbacks.Callback):
    """Raise KeyboardInterrupt at the end of epoch ``epoch`` (as Ctrl-C in a notebook would)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated interruption after epoch {epoch}")


def test_run_folder_holds_the_contract_files_and_metrics_say_which_epoch_was_kept(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "environment.json", "history.csv", "tensorboard", "best.keras", "metrics.json",
            "predictions_val.csv", "predictions_test.csv"} <= names
    assert "backup" not in names  # the resume state is removed once the run is complete
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["complete"] is True and metrics["recipe"] == "improved"
    assert metrics["epochs_run"] == 4
    assert metrics["params"] == keras.models.load_model(tiny_run / "best.keras").count_params()
    assert metrics["seconds_per_epoch"] > 0
    assert set(metrics["test"]["recall"]) == set(CLASSES)
    assert np.array(metrics["test"]["confusion"]).sum() == metrics["test"]["n"]


def test_best_checkpoint_is_the_epoch_with_the_lowest_validation_loss(tiny_run):
    history = pd.read_csv(tiny_run / "history.csv")
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["best_epoch"] == int(history["val_loss"].to_numpy().argmin())
    # Re-evaluating the saved model on the val split gives back that epoch's val_loss exactly,
    # so the checkpoint was measured on val (and the val loss on test is a different number).
    model = keras.models.load_model(tiny_run / "best.keras", compile=False)
    config = json.loads((tiny_run / "config.json").read_text())
    model.compile(loss=losses.keras_loss(config["label_smoothing"]))
    x, y = cxr_data.load_split("val", config["image_size"], subset=SUBSET)
    val_loss = model.evaluate(x / 255.0, keras.utils.to_categorical(y, 3), verbose=0)
    assert val_loss == pytest.approx(history["val_loss"].iloc[metrics["best_epoch"]], rel=1e-4)
    xt, yt = cxr_data.load_split("test", config["image_size"], subset=SUBSET)
    test_loss = model.evaluate(xt / 255.0, keras.utils.to_categorical(yt, 3), verbose=0)
    assert test_loss != pytest.approx(val_loss, rel=1e-3)


def test_best_checkpoint_refuses_to_monitor_anything_but_validation_data(tmp_path):
    assert train.BestCheckpoint(tmp_path / "best.keras").monitor == train.SELECTION_MONITOR == "val_loss"
    with pytest.raises(ValueError, match="validation"):
        train.BestCheckpoint(tmp_path / "best.keras", monitor="loss")


def test_an_accuracy_monitor_keeps_the_epoch_with_the_highest_validation_accuracy(curated_data_dir, tmp_path):
    keras.utils.set_random_seed(0)
    model = train.build_model(train.resolve_config("improved"))
    cb = train.BestCheckpoint(tmp_path / "best.keras", monitor="val_accuracy")
    saved = [cb.update(epoch, {"val_accuracy": acc, "val_loss": 1.0}, model)
             for epoch, acc in enumerate([0.5, 0.8, 0.7, 0.8])]
    assert (cb.best_epoch, cb.best) == (1, 0.8) and saved == [True, True, False, False]
    assert runs.best_index([0.5, 0.8, 0.7, 0.8], "val_accuracy") == 1
    assert runs.best_index([0.5, 0.3, 0.7, 0.3], "val_loss") == 1
    with pytest.raises(KeyError, match="val_accuracy.*validation_data"):
        cb.update(4, {"loss": 1.0}, model)


def test_the_paper_recipe_keeps_its_best_validation_accuracy_epoch_and_says_so():
    config = train.resolve_config("paper")
    assert runs.monitor_of(config) == "val_accuracy" and config["selection"].startswith("val_accuracy on the val")
    assert runs.monitor_of(train.resolve_config("improved")) == "val_loss"


def test_saved_best_model_predicts_what_the_model_predicted_before_saving(curated_data_dir, tmp_path):
    keras.utils.set_random_seed(0)
    config = train.resolve_config("improved", subset=SUBSET)
    model = train.build_model(config)
    x, _ = cxr_data.load_split("val", config["image_size"], subset=32)
    x = x.astype(np.float32) / 255.0
    before = model.predict(x, verbose=0)
    cb = train.BestCheckpoint(tmp_path / "best.keras")
    assert cb.update(0, {"val_loss": 1.0}, model)
    after = keras.models.load_model(tmp_path / "best.keras").predict(x, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_load_run_returns_a_model_that_reproduces_the_saved_predictions(tiny_run):
    model, metrics, history = runs.load_run(tiny_run)
    assert len(history) == metrics["epochs_run"]
    saved = pd.read_csv(tiny_run / "predictions_val.csv")
    assert list(saved.columns) == list(predictions.PREDICTION_COLUMNS)
    again = train.predict_split(model, "val", subset=SUBSET)
    assert (again["path"] == saved["path"]).all() and (again["label"] == saved["label"]).all()
    cols = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(again[cols].to_numpy(), saved[cols].to_numpy(), atol=1e-5)
    assert metrics["test"]["n"] == len(pd.read_csv(tiny_run / "predictions_test.csv"))


def test_predictions_carry_the_manifest_labels_and_split_groups(tiny_run, curated_data_dir):
    manifest = cxr_data.load_manifest().set_index("path")
    pred = pd.read_csv(tiny_run / "predictions_test.csv")
    assert (manifest.loc[pred["path"], "split"] == "test").all()
    assert (manifest.loc[pred["path"], "label"].to_numpy() == pred["label"].to_numpy()).all()
    assert (manifest.loc[pred["path"], "split_group"].astype(str).to_numpy() == pred["split_group"].astype(str)
            .to_numpy()).all()
    np.testing.assert_allclose(pred[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1.0, atol=1e-4)


def test_calling_again_on_a_complete_run_trains_nothing(tiny_run, capsys):
    before = (tiny_run / "history.csv").stat().st_mtime_ns, (tiny_run / "metrics.json").read_text()
    assert train.train_recipe("improved", "tiny", **TINY) == tiny_run
    assert "is complete: nothing to train" in capsys.readouterr().out
    assert ((tiny_run / "history.csv").stat().st_mtime_ns, (tiny_run / "metrics.json").read_text()) == before


def test_a_different_configuration_in_the_same_folder_is_refused(tiny_run):
    with pytest.raises(ValueError, match="different configuration.*epochs"):
        train.train_recipe("improved", "tiny", verbose=0, **{**TINY, "epochs": 5})


def test_interrupted_run_is_not_complete_and_the_next_call_resumes_it(runs_dir, tiny_run, capsys):
    with pytest.raises(KeyboardInterrupt):
        train.train_recipe("improved", "interrupted", extra_callbacks=[StopAfter(1)], **TINY)
    folder = runs_dir / "interrupted"
    assert not runs.is_complete(folder)
    assert not (folder / "metrics.json").exists()
    with pytest.raises(FileNotFoundError, match="not a complete run"):
        runs.load_run(folder)
    capsys.readouterr()
    train.train_recipe("improved", "interrupted", **TINY)
    out = capsys.readouterr().out
    # The interruption came after epoch 2 was logged but before it was backed up: epoch 2 is trained again.
    assert "resuming after epoch 1 of 4" in out
    assert "epoch 1/4" not in out and "epoch 2/4" in out and "epoch 4/4" in out
    history = pd.read_csv(folder / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert runs.is_complete(folder)
    # the step counter (and so the schedule) was restored: epoch 2 ran at the rate of its own steps
    config = json.loads((folder / "config.json").read_text())
    steps = -(-SUBSET // config["batch_size"])
    sched = train.make_schedule(config, steps)
    expected = schedules.lr_at_steps(sched, [2 * steps])[0]  # the rate the optimizer reports after epoch 2
    assert history["learning_rate"].iloc[1] == pytest.approx(expected, rel=1e-4)
    # and it is the run an uninterrupted call makes (same settings as tiny_run): same shuffles, augmentations
    # and dropout masks after the resume, so the same curves and the same predictions
    whole = pd.read_csv(tiny_run / "history.csv")
    curves = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    pd.testing.assert_frame_equal(history[curves], whole[curves])
    probs = [f"p_{c}" for c in CLASSES]
    pd.testing.assert_frame_equal(pd.read_csv(folder / "predictions_test.csv")[probs],
                                  pd.read_csv(tiny_run / "predictions_test.csv")[probs])


def test_restart_discards_an_interrupted_run_and_trains_from_the_first_epoch(runs_dir, capsys):
    with pytest.raises(KeyboardInterrupt):
        train.train_recipe("improved", "restarted", extra_callbacks=[StopAfter(1)], **SMALL)
    assert (runs_dir / "restarted" / "backup" / "state.json").is_file()  # epoch 1 was backed up: resumable
    capsys.readouterr()
    train.train_recipe("improved", "restarted", restart=True, **SMALL)
    out = capsys.readouterr().out
    assert "restart: removing" in out and "resuming" not in out and "epoch 1/2" in out
    assert pd.read_csv(runs_dir / "restarted" / "history.csv")["epoch"].tolist() == [0, 1]
    assert runs.is_complete(runs_dir / "restarted")


def test_a_metrics_file_not_marked_complete_does_not_make_a_run_complete(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "best.keras").write_bytes((tiny_run / "best.keras").read_bytes())
    (copy / "metrics.json").write_text('{"recipe": "improved", "comp')  # truncated
    assert not runs.is_complete(copy)
    (copy / "metrics.json").write_text((tiny_run / "metrics.json").read_text())
    assert runs.is_complete(copy)
    (copy / "best.keras").unlink()
    assert not runs.is_complete(copy)


def test_export_results_copies_the_small_files_and_never_the_weights(tiny_run, tmp_path):
    copied = runs.export_results(tiny_run, tmp_path / "improved")
    assert sorted(p.name for p in (tmp_path / "improved").iterdir()) == sorted(runs.RESULT_FILES)
    assert all(p.stat().st_size < 1_000_000 for p in copied)
    assert (tmp_path / "improved" / "metrics.json").read_text() == (tiny_run / "metrics.json").read_text()


def test_environment_records_versions_and_no_host_name(tiny_run):
    text = (tiny_run / "environment.json").read_text()
    env = json.loads(text)
    assert env["tensorflow"] and env["keras"] == keras.__version__ and env["numpy"] == np.__version__
    assert env["cpu_count"] == os.cpu_count()
    assert platform.node() not in text


def test_paper_recipe_is_the_script(curated_data_dir):
    paper = train.RECIPES["paper"]
    assert (paper.model, paper.image_size, paper.channels, paper.augment) == ("paper_dcnn", 80, 3, "paper")
    assert (paper.label_smoothing, paper.batch_size, paper.epochs, paper.weight_decay) == (0.12, 32, 12, 0.0)
    config = train.resolve_config("paper")
    assert losses.class_weights([1, 1, 1], config["class_weights"]) == {0: 10.0, 1: 3.0, 2: 1.0}
    rates = schedules.lr_at_steps(train.make_schedule(config, 100), [0, 299, 300, 599, 600, 1199])
    np.testing.assert_allclose(rates, [4e-4, 4e-4, 2e-4, 2e-4, 1e-4, 1e-4], rtol=1e-6)
    assert "test set as validation_data" in paper.notes and config["validation_split"] == "val"
    assert paper.monitor == "val_accuracy"


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(ValueError, match="improved.*paper"):
        train.resolve_config("fast")


def test_candidates_are_named_after_their_committed_folders_and_never_shadow_a_recipe():
    results = Path(__file__).resolve().parents[1] / "results" / "candidates"
    assert set(train.CANDIDATES) == {p.name for p in results.iterdir() if p.is_dir()}
    assert set(train.CANDIDATES) & set(train.RECIPES) == set() and set(train.EARLIER) & set(train.RECIPES) == set()
    with pytest.raises(ValueError, match="candidate.*improved_std128"):
        train.resolve_config("fast")


def test_a_run_with_a_standardising_model_reloads_in_a_fresh_python(tmp_path):
    """best.keras holds the course's own layer; loading it must not depend on what the caller imported before."""
    import subprocess
    import sys

    from cxr_utils import models

    keras.utils.set_random_seed(0)
    models.efficient_cnn(32, standardize=True, width=0.25).save(tmp_path / runs.BEST_MODEL_FILE)
    code = ("import sys; from cxr_utils import runs; "
            "m = runs.load_model(sys.argv[1]); print(type(m.get_layer('standardize')).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "PerImageStandardization"


def test_default_run_names_of_recipes_and_candidates():
    assert train.default_run_name(train.resolve_config("paper")) == "paper"
    assert train.default_run_name(train.resolve_config("improved_gn")) == "improved_gn"
    assert train.default_run_name(train.resolve_config("improved", epochs=2, subset=96, seed=1)) == \
        "improved-2ep-128px-n96-seed1"


def test_candidate_summary_recomputes_the_committed_test_accuracy():
    """compare.runs_table (tools/candidates.py): test accuracy is the share of argmax hits in each predictions file."""
    from cxr_utils.compare import runs_table

    repo = Path(__file__).resolve().parents[1]
    folders = {"improved_v1": repo / "results" / "improved_v1"}
    folders.update({name: repo / "results" / "candidates" / name for name in train.CANDIDATES})
    table = runs_table(folders, n_boot=50)
    assert set(table.index) == {"improved_v1", *train.CANDIDATES}
    for name, row in table.iterrows():
        df = pd.read_csv(folders[name] / "predictions_test.csv")
        hits = (df[[f"p_{c}" for c in CLASSES]].to_numpy().argmax(1) == df["label"].map(CLASSES.index)).mean()
        assert row["test accuracy"].startswith(f"{hits:.3f} ["), (name, row["test accuracy"], hits)
    committed = pd.read_csv(repo / "results" / "candidates" / "summary.csv", index_col="run")
    again = runs_table(folders)  # what tools/candidates.py writes: the committed summary is up to date
    assert committed.astype(str).to_dict() == again.astype(str).to_dict()


def test_two_runs_one_beside_a_cpu_heavy_process_give_identical_histories_and_predictions(runs_dir, tiny_run):
    import subprocess
    import sys

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core busy: the run's threads contend
    try:
        again = train.train_recipe("improved", "tiny-loaded", verbose=0, **TINY)
        assert hog.poll() is None, "the CPU-heavy process ended before the run did"
    finally:
        hog.kill()
    curves = ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    pd.testing.assert_frame_equal(pd.read_csv(again / "history.csv")[curves],
                                  pd.read_csv(tiny_run / "history.csv")[curves])
    for name in ("predictions_val.csv", "predictions_test.csv"):
        assert (again / name).read_bytes() == (tiny_run / name).read_bytes()
    config = json.loads((again / "config.json").read_text())
    assert config["deterministic"] is True


def test_a_run_folder_of_other_data_is_refused_and_restart_is_the_way_out(runs_dir, tiny_run):
    import shutil

    stale = runs_dir / "stale"
    shutil.copytree(tiny_run, stale)
    config = json.loads((stale / "config.json").read_text())
    config["data"]["manifest_sha256"] = "0" * 64  # as if trained before the manifest changed
    (stale / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'runs/stale' was trained on other data.*restart=True"):
        train.train_recipe("improved", "stale", verbose=0, **TINY)
    assert (stale / "best.keras").is_file()  # refused: nothing was removed or trained


def test_a_keras_that_keeps_dropouts_random_state_elsewhere_stops_a_backup_with_a_clear_message(monkeypatch,
                                                                                                tmp_path):
    from cxr_utils import models

    model = models.efficient_cnn(32, width=0.25)
    assert len(train.Backup.seed_states(model)) == 1  # this Keras: the one dropout layer's state is found
    monkeypatch.setattr(train, "SEED_STATE_SUFFIX", "state_that_keras_does_not_have")
    with pytest.raises(train.ResumeError, match=r"Keras .* dropout's random state.*pinned keras"):
        train.Backup(tmp_path).save(model, 1)
    assert not (tmp_path / "state.json").exists()


def test_a_damaged_backup_is_refused_with_the_way_out(tmp_path):
    backup = train.Backup(tmp_path)
    assert backup.epochs_done() == 0
    (tmp_path / "state.json").write_text('{"epochs_done": 1, "model": "model_1.keras", "seed_states": "s.npz"}')
    assert backup.epochs_done() == 1
    with pytest.raises(train.ResumeError, match="cannot be read.*restart=True"):
        backup.restore()
    (tmp_path / "state.json").write_text('{"epochs_do')
    with pytest.raises(train.ResumeError, match="cannot be read.*restart=True"):
        backup.epochs_done()


def test_the_estimate_reads_a_finished_run_and_probes_only_what_is_left_to_train(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    shape = dict(epochs=4, subset=96, image_size=64)
    shutil.copytree(tiny_run, tmp_path / train.default_run_name(train.resolve_config("improved", **shape)))
    done = train.estimate_seconds("improved", **shape)
    measured = json.loads((tiny_run / "metrics.json").read_text())["seconds_per_epoch"]
    assert done["complete"] and done["seconds"] == 0 and done["epoch_seconds"] == measured
    assert done["images_per_second"] is None  # nothing was probed
    todo = train.estimate_seconds("improved", **{**shape, "epochs": 5}, steps=2)
    assert not todo["complete"] and todo["images_per_second"] > 0
    assert todo["seconds"] == pytest.approx(5 * todo["epoch_seconds"])
    train_n, val_n = (len(train.split_rows(s, 96, 0)) for s in ("train", "val"))
    rate = todo["images_per_second"]
    assert todo["epoch_seconds"] == pytest.approx(train_n / rate + val_n / (3 * rate))
