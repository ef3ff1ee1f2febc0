"""dvc.yaml against the code: each stage's code `deps` are exactly what its module imports, and its
`params` cover every key it reads."""

import re

import numpy as np
import pytest
import yaml
from helpers import (
    CROP, REPO_ROOT, SHARED_FACE_DETECTOR, TRAIN_DEFAULTS, dataset_block, face_detector_pin, run_stage, save_params,
    write_course_h5, write_image_folders)

from stages import compare, config, download, evaluate, preprocess, train
from stages.code import code_files
from stages.config import DatasetSpec, ModelSpec
from stages.models import BUILDER_MODULES

STAGE_MODULES = {"download": download, "preprocess": preprocess, "train": train, "evaluate": evaluate,
                 "compare": compare}


def stage_instances(pipeline, params):
    """Every stage of a dvc.yaml for these params: {name: (stage word, its model block or dataset item or None,
    deps, params, command arguments)}, with foreach's ${key} and ${item.<field>} and matrix's
    ${item.model} and ${item.seed} filled in as DVC fills them."""
    instances = {}

    def fill(text, values):
        text = text.replace("${key}", str(values.get("key", "")))
        return re.sub(r"\$\{item\.(\w+)\}", lambda match: str(values["item"][match.group(1)]), text)

    def entries(stage, values, field):
        return [fill(next(iter(entry)) if isinstance(entry, dict) else entry, values) for entry in stage.get(field, [])]

    for word, stage in pipeline["stages"].items():
        if "matrix" in stage:  # over the models' names and the training seeds
            assert stage["matrix"] == {"model": "${models}", "seed": "${seeds}"}, word
            for model, block in params["models"].items():
                for seed in params["seeds"]:
                    values = {"item": {"model": model, "seed": seed}}
                    instances[f"{word}@{model}-{seed}"] = (word, block, entries(stage, values, "deps"),
                                                           entries(stage, values, "params"), [model, str(seed)])
        elif "foreach" in stage:
            section = re.fullmatch(r"\$\{(\w+)\}", stage["foreach"]).group(1)
            for key, item in params[section].items():
                values = {"key": key, "item": item}
                instances[f"{word}@{key}"] = (word, item, entries(stage["do"], values, "deps"),
                                              entries(stage["do"], values, "params"), [key])
        else:
            instances[word] = (word, None, stage.get("deps", []), stage.get("params", []), [])
    return instances


def imported_code(word, item):
    """What the stage's command runs: its module, and the builder module the registry imports by name."""
    roots = [f"stages.{word}"]
    if item and "builder" in item:
        roots.append(BUILDER_MODULES[item["builder"]])
    return set(code_files(*roots))


def code_dependency_errors(pipeline, params):
    """A listed folder of the project's code (stages/models) covers every module in it."""
    errors = []
    for name, (word, item, deps, _, _) in stage_instances(pipeline, params).items():
        listed = {dep for dep in deps if dep.endswith(".py")}
        folders = [dep for dep in deps if dep.startswith("stages/") and not dep.endswith(".py")]
        imported = imported_code(word, item)
        in_folders = {path for path in imported for folder in folders if path.startswith(folder + "/")}
        errors += [f"{name}: imports {path} but its deps lack it" for path in sorted(imported - listed - in_folders)]
        errors += [f"{name}: lists {path} in its deps but does not import it" for path in sorted(listed - imported)]
        errors += [f"{name}: lists {folder} in its deps but imports nothing from it" for folder in folders
                   if not any(path.startswith(folder + "/") for path in imported)]
    return errors


def test_each_stage_lists_exactly_the_project_modules_it_imports():
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert code_dependency_errors(pipeline, params) == []


def test_a_missing_or_stale_code_dependency_is_named_with_its_stage():
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    deps = pipeline["stages"]["train"]["deps"]
    deps.remove("stages/images.py")
    deps.append("stages/compare.py")
    pipeline["stages"]["preprocess"]["do"]["deps"].remove("stages/faces.py")
    errors = code_dependency_errors(pipeline, params)
    for model in params["models"]:
        for seed in params["seeds"]:
            assert f"train@{model}-{seed}: imports stages/images.py but its deps lack it" in errors
            assert f"train@{model}-{seed}: lists stages/compare.py in its deps but does not import it" in errors
    for dataset in params["datasets"]:
        assert f"preprocess@{dataset}: imports stages/faces.py but its deps lack it" in errors
    assert len(errors) == 2 * len(params["models"]) * len(params["seeds"]) + len(params["datasets"])


def test_a_code_folder_in_the_deps_covers_its_modules_and_must_be_imported_from():
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    pipeline["stages"]["compare"]["deps"].append("stages/models")
    pipeline["stages"]["train"]["deps"].remove("stages/models")
    errors = code_dependency_errors(pipeline, params)
    assert "compare: lists stages/models in its deps but imports nothing from it" not in errors, \
        "compare imports the registry (stages/models/__init__.py)"
    first = f"train@{next(iter(params['models']))}-{params['seeds'][0]}"
    assert f"{first}: imports stages/models/augmentation.py but its deps lack it" in errors
    pipeline["stages"]["compare"]["deps"].append("stages/nothing")
    assert "compare: lists stages/nothing in its deps but imports nothing from it" in code_dependency_errors(
        pipeline, params)


def test_code_files_follow_imports_inside_functions_and_the_packages_on_the_way():
    files = code_files("stages.download")
    assert "stages/__init__.py" in files and "stages/files.py" in files
    assert "stages/models/__init__.py" in files, "config.model_spec imports the registry inside the function"
    assert "stages/train.py" not in files
    assert {"stages/models/resnet50.py", "stages/models/heads.py"} <= set(code_files("stages.models.resnet50"))
    with pytest.raises(ValueError, match="no project module named stages.nothing"):
        code_files("stages.nothing")


# --- params: what each stage reads, recorded while it runs -----------------------------------------------

def read_whole(method):
    """A dict method that first notes its mapping as read whole (iterated, copied, dumped)."""
    def noted(self):
        self._note()
        return method(self)
    return noted


class Recorded(dict):
    """A params mapping that notes the dotted path of every value read from it (a mapping iterated
    or copied counts as read whole). `paths` are the places in params.yaml its values come from."""

    def __init__(self, data, paths, reads):
        super().__init__(data)
        self.plain, self.paths, self.reads = data, paths, reads

    def _note(self, *keys):
        self.reads.update(".".join(map(str, (*path, *keys))) for path in self.paths)

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if isinstance(value, dict):
            return Recorded(value, [(*path, key) for path in self.paths], self.reads)
        self._note(key)
        return value

    def get(self, key, default=None):
        if key in self:
            return self[key]
        self._note(key)
        return default

    __iter__, keys, items, values = map(read_whole, (dict.__iter__, dict.keys, dict.items, dict.values))


def record_spec_reads(monkeypatch, reads):
    """Note which params each dataset and model spec field a stage reads comes from."""
    dataset_fields = config.DATASET_KEYS

    def dataset_attribute(spec, name):
        value = object.__getattribute__(spec, name)
        where = ("split_seed",) if name == "split_seed" else ("datasets", object.__getattribute__(spec, "name"), name)
        if name in dataset_fields or name == "split_seed":
            reads.add(".".join(where))  # a field read at all, even to see whether it is set, is a read
            if isinstance(value, dict):
                return Recorded(value, [where], reads)
        return value

    def model_attribute(spec, name):
        value = object.__getattribute__(spec, name)
        model = ("models", object.__getattribute__(spec, "name"))
        if name == "train":
            return Recorded(value, [("train",), (*model, "train")], reads)
        if name == "network":
            return Recorded(value, [(*model, "network")], reads)
        if name in ("builder", "dataset"):  # the seed comes from the stage's command (dvc.yaml's matrix)
            reads.add(".".join((*model, name)))
        return value

    monkeypatch.setattr(DatasetSpec, "__getattribute__", dataset_attribute)
    monkeypatch.setattr(ModelSpec, "__getattribute__", model_attribute)


def record_params_reads(monkeypatch, module, reads):
    """The stage's load_params gives a Recorded mapping; its spec functions read the plain one (checking
    a block is not using it: what the stage uses from a spec is noted field by field)."""
    monkeypatch.setattr(module, "load_params", lambda path=config.PARAMS_FILE: Recorded(
        config.load_params(path), [()], reads))
    for name in ("dataset_spec", "model_spec"):
        if hasattr(module, name):
            real = getattr(config, name)
            monkeypatch.setattr(module, name, lambda params, key, *seed, real=real: real(params.plain, key, *seed))


def covered(path, listed):
    return any(path == entry or path.startswith(entry + ".") for entry in listed)


@pytest.fixture
def small_pipeline(project, tmp_path, monkeypatch):
    """One tiny dataset read through LOCAL_DATA_DIR and one small model over it."""
    mirror = tmp_path / "mirror"
    write_image_folders(mirror / "faces", {"frown": 6, "smile": 6}, size=(16, 16))
    monkeypatch.setenv("LOCAL_DATA_DIR", str(mirror))
    face_step = {}
    if SHARED_FACE_DETECTOR.is_file():  # the face step's reads too, with an external set it frames
        write_course_h5(mirror / "elsewhere.h5", "test", np.full((4, 16, 16, 3), 128, np.uint8), [0, 1, 0, 1],
                        [b"frown", b"smile"])
        external = {"file": "https://example.invalid/elsewhere.h5", "mirror": "elsewhere.h5",
                    "classes": {"frown": 0, "smile": 1}}
        face_step = {"crop": dict(CROP), "face_detector": face_detector_pin(), "external": {"elsewhere": external}}
    params = {"split_seed": 3, "seeds": [3],
              "datasets": {"faces": {**dataset_block({"url": "http://127.0.0.1:9/faces.zip", "mirror": "faces"},
                                                     {"frown": "frown", "smile": "smile"}, image_size=16),
                                     **face_step}},
              "train": dict(TRAIN_DEFAULTS, batch_size=4, epochs=1),
              "models": {"faces_cnn": {"dataset": "faces", "builder": "happy_cnn"}}}
    save_params(project, params)
    return params


def test_each_stage_lists_every_params_key_it_reads(small_pipeline, monkeypatch):
    instances = stage_instances(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text()), small_pipeline)
    missing = {}
    for name in ("download@faces", "preprocess@faces", "train@faces_cnn-3", "evaluate@faces_cnn-3", "compare"):
        word, _, _, listed, arguments = instances[name]
        reads = set()
        with monkeypatch.context() as patch:
            record_spec_reads(patch, reads)
            record_params_reads(patch, STAGE_MODULES[word], reads)
            assert run_stage(STAGE_MODULES[word], *arguments) is None, name
        assert reads, f"{name}: nothing recorded"
        missing[name] = sorted(path for path in reads if not covered(path, listed))
    assert missing == dict.fromkeys(missing, [])
