"""Running the course (``python -m cxr_utils.lessons run``, which ``tools/course.py run`` hands over to): the
terminal shows each training epoch and the time left, leaves out the known start-up noise, and shows the end of
a lesson's output when it fails."""

from __future__ import annotations

import nbformat
import pytest

from cxr_utils import lessons

# Lines a real run printed on this machine (TensorFlow looking for CUDA, the kernel's TCP warning, papermill).
NOISE = [
    "I0000 00:00:1795935128.492134    7414 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication (including code and "
    "outputs) is sent in plain text and is susceptible to eavesdropping.",
    "Executing Cell 3---------------------------------------",
]
SHOWN = [
    "estimate: paper, 12 epochs of about 230.0 s each: 46 min",
    "training 'paper' into runs/paper: 63,148,835 parameters, 4337 training images (136 batches of 32), 12 epochs",
    "epoch  1/12  loss 3.8043 acc 0.2910 | val loss 1.5258 acc 0.2597 | lr 4.0e-04 | 224 s  *",
    "done: best epoch 11 (by val_accuracy); val accuracy 0.833; test accuracy 0.854",
]


@pytest.mark.parametrize("line", NOISE)
def test_known_start_up_noise_is_never_shown(line):
    assert lessons.NOISE.search(line) and not lessons.SHOW.search(line)


@pytest.mark.parametrize("line", SHOWN)
def test_training_progress_and_the_estimate_are_shown(line):
    assert lessons.SHOW.search(line) and not lessons.NOISE.search(line)


def test_an_error_in_a_lesson_is_not_taken_for_noise():
    assert not lessons.NOISE.search("ValueError: the manifest has no 'test' rows")


def test_time_left_follows_the_estimate_then_the_measured_epochs():
    p = lessons.Progress()
    p.feed("estimate: paper, 12 epochs of about 200.0 s each: 40 min")
    p.feed("estimate: improved, 15 epochs of about 50.0 s each: 12 min")
    assert p.left() == 12 * 200 + 15 * 50
    p.feed("training 'paper' into runs/paper: ...")
    note = p.feed("epoch  1/12  loss 3.8 acc 0.29 | val loss 1.5 acc 0.26 | lr 4.0e-04 | 260 s")
    assert p.left() == 11 * 260 + 15 * 50 and note == f"about {(11 * 260 + 750) / 60:.0f} min left in this lesson"
    p.feed("training 'improved' into runs/improved: ...")
    p.feed("resuming after epoch 10 of 15 (state restored from backup/)")
    assert p.left() == 11 * 260 + 5 * 50  # paper's count is where its lines left it; improved has 5 to go


def _notebook(tmp_path, code: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("quick = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    path = tmp_path / "99_progress.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_lesson_that_trains_shows_its_epochs_and_the_time_left_and_no_noise(tmp_path, tiny_run):
    """A lesson that imports TensorFlow (whose C++ start-up lines go to the kernel's stderr) and prints the session's
    tiny run's real history as training prints it, under papermill as ``course.py run`` starts it."""
    code = ("import tensorflow\n"
            "import pandas as pd\n"
            "from cxr_utils import runs\n"
            "print('estimate: improved, 4 epochs of about 30.0 s each: 2 min')\n"
            "print(\"training 'improved' into runs/tiny: 747,683 parameters\")\n"
            f"history = pd.read_csv({str(tiny_run / 'history.csv')!r})\n"
            "print('\\n'.join(runs.history_lines(history, 4)))\n")
    shown = []
    assert lessons.execute(_notebook(tmp_path, code), tmp_path / "out.ipynb", {"quick": "True"}, shown.append) == 0
    text = "\n".join(shown)
    assert "training 'improved'" in text and "epoch 1/4" in text and "epoch 4/4" in text
    assert text.count("min left in this lesson") == 4 and "about 0 min left in this lesson" in text
    assert not any(lessons.NOISE.search(line.strip()) for line in shown)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "quick = True" in executed.cells[1].source  # papermill injected the parameter after the parameters cell


def test_a_failing_lesson_shows_the_end_of_its_output_and_returns_its_status(tmp_path):
    shown = []
    code = "print('about to fail')\nraise ValueError('the manifest has no test rows')\n"
    assert lessons.execute(_notebook(tmp_path, code), tmp_path / "out.ipynb", {}, shown.append) != 0
    assert "the manifest has no test rows" in "\n".join(shown)


def test_parameters_are_read_from_the_parameters_cell(tmp_path):
    assert lessons.parameters_of(_notebook(tmp_path, "x = 1")) == {"quick"}
    assert "quick" not in lessons.parameters_of(lessons.lessons()[0])  # lesson 01 has no training to shorten
