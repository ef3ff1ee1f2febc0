"""download stage: fetch one dataset's source into data/raw/<dataset>/ and verify its fingerprint.

Writes data/raw/<dataset>.json too, the record of what was fetched (fingerprint, external files'
sha256, file counts), which preprocess depends on instead of the folder itself.

Sources: an http(s) archive (zip or tar) or a local directory of class folders, or a pair of
course HDF5 files (paths or URLs). With LOCAL_DATA_DIR set, remote sources are read from the
`mirror` path under that directory instead, so the stage runs offline with identical results.
External test sets (course-layout HDF5 files) go to data/raw/<dataset>/external/<name>.h5, each
checked against its own sha256, outside the dataset's fingerprint. So does the face step's detector
(`face_detector`, stages/faces.py), to data/raw/<dataset>/face_detector.onnx: from its URL, or from
its mirror under LOCAL_WEIGHTS_DIR, checked by sha256 and loaded once with OpenCV.

    python -m stages.download <dataset>
"""

import contextlib
import logging
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import h5py
import pooch
import requests

from stages.cli import exit_on, parse_stage_arguments
from stages.config import LOCAL_DATA_ENV, LOCAL_WEIGHTS_ENV, ParamsError, dataset_spec, load_params, local_dir
from stages.faces import FaceStepError, load_detector
from stages.files import file_sha256, staged_path, tree_fingerprint, write_json

log = logging.getLogger("download")

DOWNLOAD_TIMEOUT_SECONDS = 120
SNIFF_BYTES = 1024
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
COMPRESSED_TAR_SIGNATURES = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)
ZIP_ERRORS = (zipfile.BadZipFile, EOFError, OSError, zlib.error)
H5_ERRORS = (OSError, KeyError, ValueError)


class DownloadError(RuntimeError):
    """A source that could not be fetched or did not hold what params.yaml promises."""


def is_remote(location):
    return location.startswith(("http://", "https://"))


def download_dataset(spec, local_dir=None):
    """Fetch spec's source into spec.raw_dir, verify it, write its record, and return the per-class file counts.

    The record (spec.raw_record: the fingerprint, the sha256 of the external files and of the face
    detector, and the counts) is
    what preprocess depends on in dvc.yaml: it changes exactly when the files do, and DVC checks one
    small file instead of walking the folder's thousands of files a second time on every `dvc repro`.
    """
    with tempfile.TemporaryDirectory() as scratch, staged_path(spec.raw_dir, directory=True) as staging:
        if spec.source_kind == "h5":
            fetch_h5_pair(spec, staging, Path(scratch), local_dir)
        else:
            fetch_class_folders(spec, staging, Path(scratch), local_dir)
        fingerprint = verify_fingerprint(spec, staging)
        external = {name: fetch_external(spec, name, block, staging / "external", Path(scratch), local_dir)
                    for name, block in spec.external.items()}
        record = {"fingerprint": fingerprint, "external_sha256": external}
        if spec.face_detector is not None:
            record["face_detector_sha256"] = fetch_face_detector(spec, staging / spec.face_detector_path.name,
                                                                 Path(scratch))
        record["contents"] = {entry.name: describe_entry(entry) for entry in sorted(staging.iterdir())}
    write_json(spec.raw_record, record)
    return record["contents"]


def describe_entry(path):
    """'205 files' for a class folder, '1,846,560 bytes' for a single file."""
    if path.is_dir():
        return f"{sum(1 for item in path.rglob('*') if item.is_file())} files"
    return f"{path.stat().st_size:,} bytes"


# --- class folders -------------------------------------------------------------------------

def fetch_class_folders(spec, staging, scratch, local_dir):
    """Copy each class folder of the source into staging/<class name>/."""
    url, root = spec.source["url"], spec.source.get("root", "")
    if is_remote(url) and local_dir is not None:
        copy_class_folders(spec, mirror_path(spec, local_dir), staging)
    elif is_remote(url):
        archive = fetch_url(spec.name, url, scratch, spec.source.get("sha256") or None,
                            f"datasets.{spec.name}.source.sha256")
        extract_class_folders(spec, archive, root, staging)
    elif Path(url).is_file():
        extract_class_folders(spec, Path(url), root, staging)
    elif Path(url).is_dir():
        copy_class_folders(spec, Path(url) / root, staging)
    else:
        raise DownloadError(f"source.url '{url}' is neither an http(s) URL nor an existing file or directory")


def mirror_path(spec, local_dir):
    """Where LOCAL_DATA_DIR holds this dataset's copy; an error if it is not there."""
    mirror = spec.source.get("mirror")
    if not mirror:
        raise DownloadError(f"{LOCAL_DATA_ENV} is set but datasets.{spec.name}.source.mirror is not: "
                            "name the dataset's folder under that directory, or unset the variable")
    path = local_dir / mirror
    if not path.exists():
        raise DownloadError(f"{LOCAL_DATA_ENV}={local_dir}: expected the local copy at {path}, which does not exist")
    return path


def copy_class_folders(spec, root, staging):
    for class_name, folder in spec.classes.items():
        source_folder = root / folder
        files = sorted(path for path in source_folder.rglob("*") if path.is_file() and not path.name.startswith(".")) \
            if source_folder.is_dir() else []
        if not files:
            raise missing_class_error(spec, class_name, folder, root, sorted_children(root))
        for path in files:
            target = staging / class_name / path.relative_to(source_folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def sorted_children(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def missing_class_error(spec, class_name, folder, root, found):
    found_text = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "") if found else "nothing"
    return DownloadError(f"class '{class_name}' expects a non-empty folder '{folder}' under {root}; "
                         f"found there: {found_text}")


def extract_class_folders(spec, archive_path, root, staging):
    """Extract only the class folders' files from a zip or tar archive."""
    prefixes = {class_name: PurePosixPath(root, folder) for class_name, folder in spec.classes.items()}
    extracted = dict.fromkeys(prefixes, 0)
    children_of_root = set()
    for member_name, read_member in archive_members(archive_path):
        member = PurePosixPath(member_name)
        if ".." in member.parts or member.is_absolute():
            raise DownloadError(f"archive {archive_path.name} holds an unsafe path '{member_name}'")
        if member.is_relative_to(root) and member != PurePosixPath(root):
            children_of_root.add(member.relative_to(root).parts[0])
        for class_name, prefix in prefixes.items():
            if member.is_relative_to(prefix) and not member.name.startswith("."):
                target = staging / class_name / member.relative_to(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read_member())
                extracted[class_name] += 1
    for class_name, count in extracted.items():
        if count == 0:
            raise missing_class_error(spec, class_name, spec.classes[class_name],
                                      f"'{root or '.'}' in the archive", sorted(children_of_root))


def archive_members(archive_path):
    """Yield (name, read) for every regular file of a zip or tar archive, with clear errors."""
    kind = sniff(archive_path)
    if kind == "zip":
        with archive_errors("zip", ZIP_ERRORS), zipfile.ZipFile(archive_path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: read_member(archive.read, info, "zip", ZIP_ERRORS)
    elif kind == "tar":
        with archive_errors("tar", TAR_ERRORS), tarfile.open(archive_path) as archive:
            for info in archive:
                if info.isfile():
                    yield info.name, lambda info=info: read_member(
                        lambda member: archive.extractfile(member).read(), info, "tar", TAR_ERRORS)
    else:
        raise DownloadError(f"expected a zip or tar archive, got {describe_unknown(archive_path)}")


@contextlib.contextmanager
def archive_errors(kind, errors):
    """Turn a library's errors about a damaged archive into one DownloadError."""
    try:
        yield
    except errors as error:
        raise DownloadError(f"the {kind} archive is corrupt or truncated ({error})") from error


def read_member(read, info, kind, errors):
    with archive_errors(kind, errors):
        return read(info)


def sniff(path):
    """Guess a file's format from its first bytes: zip, tar, hdf5, html or unknown."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(ZIP_SIGNATURE):
        return "zip"
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(COMPRESSED_TAR_SIGNATURES) or head[257:262] == b"ustar":
        return "tar"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "html"
    return "unknown"


def describe_unknown(path):
    size = path.stat().st_size
    if sniff(path) == "html":
        return f"an HTML page ({size:,} bytes): the URL serves a web page, not the data"
    with open(path, "rb") as handle:
        head = handle.read(16)
    return f"a file of {size:,} bytes starting {head!r}"


def fetch_url(label, url, scratch, sha256=None, where=None, local_env=LOCAL_DATA_ENV):
    """Download url into scratch with a progress bar, and have pooch check it against `sha256` (the
    params.yaml key `where` pins it; None: nothing to check, and where given, say what to pin).
    Network and HTTP failures and a mismatch become DownloadErrors; `local_env` is the variable that
    names an offline copy."""
    log.info("%s: downloading %s", label, url)
    pooch.get_logger().setLevel(logging.WARNING)
    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=DOWNLOAD_TIMEOUT_SECONDS)
    name = PurePosixPath(url.split("?")[0]).name or "download"
    try:
        path = Path(pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None, fname=name, path=scratch,
                                   downloader=downloader))
    except ValueError as error:  # pooch: the downloaded file's hash is not the known one
        found = re.search(r"got:? '?([0-9a-f]{64})", str(error))
        raise DownloadError(f"sha256 mismatch: {where} expects {sha256}, the download of {url} gives "
                            f"{found.group(1) if found else 'another'}; the source changed or is damaged") from error
    except requests.HTTPError as error:
        raise DownloadError(f"the server refused {url}: {error}") from error
    except requests.RequestException as error:
        raise DownloadError(f"network failure fetching {url}: {error}; "
                            f"to work offline, set {local_env} to a folder of local copies") from error
    if sha256 is None and where:
        log.warning("%s: no sha256 pinned for %s; it gives %s: pin it as %s", label, url, file_sha256(path), where)
    return path


# --- course HDF5 files ---------------------------------------------------------------------

def fetch_h5_pair(spec, staging, scratch, local_dir):
    """Fetch the train and test HDF5 files into staging/train.h5 and staging/test.h5, checking their layout."""
    for split in ("train", "test"):
        location = spec.source[split]
        if is_remote(location) and local_dir is not None:
            path = mirror_path(spec, local_dir) / PurePosixPath(location.split("?")[0]).name
            if not path.is_file():
                raise DownloadError(f"{LOCAL_DATA_ENV}={local_dir}: expected the {split} file at {path}")
        elif is_remote(location):
            path = fetch_url(spec.name, location, scratch / split)
        else:
            path = Path(location)
            if not path.is_file():
                raise DownloadError(f"source.{split}: no such file '{location}'")
        check_course_h5(path, split, spec.classes, spec.num_classes)
        shutil.copyfile(path, staging / f"{split}.h5")


def fetch_external(spec, name, external, folder, scratch, local_dir):
    """One external test set: its HDF5 file, checked against the pinned sha256 and the course layout.
    Returns the file's sha256."""
    where = f"datasets.{spec.name}.external.{name}"
    path, found = fetch_pinned_file(spec.name, where, external, scratch / "external" / name, local_dir, LOCAL_DATA_ENV)
    check_course_h5(path, "test", external["classes"], None, where)
    folder.mkdir(exist_ok=True)
    shutil.copyfile(path, folder / f"{name}.h5")
    return found


def fetch_pinned_file(label, where, pin, scratch, local_dir, local_env):
    """A file pinned by a params.yaml block {file, mirror, sha256} (`where` names it): from its mirror
    under local_dir when the environment variable local_env set one, else from its URL or path.
    Returns (its path, its sha256), checked against the pinned one (none pinned: a warning says what to pin)."""
    location = pin["file"]
    if is_remote(location) and local_dir is not None:
        if not pin.get("mirror"):
            raise DownloadError(f"{local_env} is set but {where}.mirror is not: name the file's copy under it")
        path = local_dir / pin["mirror"]
    elif is_remote(location):
        path = fetch_url(label, location, scratch, pin.get("sha256"), f"{where}.sha256", local_env)
    else:
        path = Path(location)
    if not path.is_file():
        raise DownloadError(f"{where}: the file {path} does not exist")
    found = file_sha256(path)
    if pin.get("sha256") is None:
        log.warning("%s: no sha256 pinned; %s gives %s: pin it as %s.sha256", label, path, found, where)
    elif found != pin["sha256"]:
        raise DownloadError(f"{where}: {path} has sha256 {found}, params.yaml expects {pin['sha256']}; "
                            "the file changed or is damaged")
    return path, found


def fetch_face_detector(spec, destination, scratch):
    """The face step's detector, pinned by `face_detector`, copied to destination once OpenCV has loaded
    it; returns its sha256."""
    path, found = fetch_pinned_file(spec.name, f"datasets.{spec.name}.face_detector", spec.face_detector,
                                    scratch / "face_detector", local_dir(LOCAL_WEIGHTS_ENV), LOCAL_WEIGHTS_ENV)
    # fetch_pinned_file checked the hash: OpenCV only has to load it.
    load_detector(path, None, min_score=0.5, fetch=f"check datasets.{spec.name}.face_detector, then try")
    shutil.copyfile(path, destination)
    return found


def check_course_h5(path, split, classes, class_count_expected, where=None):
    """Fail unless path is an HDF5 file in the course layout whose labels are among `classes`' label ids.

    class_count_expected: how many entries list_classes must have (None: any number).
    """
    label = f"{where}: {split} file {path.name}" if where else f"{split} file {path.name}"
    if sniff(path) != "hdf5":
        raise DownloadError(f"{label}: expected an HDF5 file, got {describe_unknown(path)}")
    images_key, labels_key = f"{split}_set_x", f"{split}_set_y"
    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in (images_key, labels_key, "list_classes") if key not in handle]
            if missing:
                raise DownloadError(f"{label} lacks dataset(s) {', '.join(missing)}; "
                                    f"found {', '.join(sorted(handle))}")
            images_shape = handle[images_key].shape
            labels = handle[labels_key][()].reshape(-1)
            class_count = len(handle["list_classes"])
    except H5_ERRORS as error:
        raise DownloadError(f"{label} is corrupt or truncated ({error})") from error
    if len(images_shape) not in (3, 4) or images_shape[0] != len(labels):
        raise DownloadError(f"{label}: expected N images of HxW or HxWxC and N labels, "
                            f"got images {images_shape} and {len(labels)} labels")
    if class_count_expected is not None and class_count != class_count_expected:
        raise DownloadError(f"{label}: list_classes has {class_count} entries, "
                            f"params.yaml declares {class_count_expected} classes")
    unknown = sorted(set(labels.tolist()) - set(classes.values()))
    if unknown:
        raise DownloadError(f"{label} has labels {unknown} that no class in params.yaml "
                            f"maps to (declared: {classes})")


# --- integrity -----------------------------------------------------------------------------

def verify_fingerprint(spec, staging):
    """The fetched files' fingerprint, checked against the pinned one."""
    found = tree_fingerprint(staging)
    if spec.fingerprint is None:
        log.warning("%s: no fingerprint pinned; these files give %s: pin it as datasets.%s.fingerprint",
                    spec.name, found, spec.name)
    elif found != spec.fingerprint:
        raise DownloadError(f"fingerprint mismatch: params.yaml expects {spec.fingerprint}, "
                            f"the fetched files give {found}; the source changed or is damaged")
    return found


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, dataset="a key of the datasets section of params.yaml")
    with exit_on(f"download {args.dataset}", DownloadError, ParamsError, FaceStepError):
        spec = dataset_spec(load_params(), args.dataset)
        log.info("%s: fetching %s into %s", spec.name, local_dir(LOCAL_DATA_ENV) or "its source", spec.raw_dir)
        counts = download_dataset(spec, local_dir(LOCAL_DATA_ENV))
    log.info("%s: wrote %s: %s", spec.name, spec.raw_dir, ", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
