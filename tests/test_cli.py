"""What every stage prints: TensorFlow's start-up lines kept out unless asked for, its other output kept."""

from helpers import REPO_ROOT, run_python

STARTUP_LINES = ("All log messages before absl::InitializeLog", "oneDNN custom operations are on")


def test_tensorflow_startup_lines_are_filtered_and_come_back_when_verbose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # as a stage starts: importing stages here set it
    quiet = run_python("-c", "import stages, keras; keras.ops.ones(1)", cwd=REPO_ROOT, env={"PIPELINE_VERBOSE": ""})
    verbose = run_python("-c", "import stages, keras; keras.ops.ones(1)", cwd=REPO_ROOT, env={"PIPELINE_VERBOSE": "1"})
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert not any(line in quiet.stderr for line in STARTUP_LINES), quiet.stderr
    assert any(line in verbose.stderr for line in STARTUP_LINES), "TensorFlow printed no start-up line to filter"


def test_what_else_tensorflow_prints_while_it_starts_still_gets_through(tmp_path):
    """A stand-in `tensorflow` package that writes to file descriptor 2 as the C++ library does."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on. You may see...\\n')\n"
        "os.write(2, b'W0000 00:00:1.0  1 gpu_device.cc:2] Cannot dlopen some GPU libraries.\\n')\n"
        "VERSION = 'stand-in'\n")
    code = "import stages, os, tensorflow; print(tensorflow.VERSION, os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    result = run_python("-c", code, cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}", "PIPELINE_VERBOSE": "",
                                                        "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["stand-in", "0"], "imported once, and a level the user set is kept"
    assert "Cannot dlopen some GPU libraries" in result.stderr
    assert "oneDNN" not in result.stderr
