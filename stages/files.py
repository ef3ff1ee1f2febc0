"""Writing outputs so that an interrupted stage never leaves a half-written one behind."""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

HASH_CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def staged_path(final_path, directory=False):
    """Yield a temporary sibling of final_path; move it into place only if the block succeeds.

    A file is replaced in one atomic rename, so a reader sees the old file or the new one, never
    neither and never a torn one.

    A process killed outright (SIGKILL, power loss) cannot clean up: its hidden `.<name>.partial-*`
    sibling is never taken for the output, and the next writer of the same output deletes it.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final_path.name}.partial-"
    for leftover in final_path.parent.glob(f"{glob.escape(prefix)}*"):
        remove_path(leftover)
    if directory:
        temporary = Path(tempfile.mkdtemp(prefix=prefix, dir=final_path.parent))
    else:
        # Keep the suffix: writers such as Keras choose the format from it.
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=final_path.suffix, dir=final_path.parent)
        os.close(handle)
        temporary = Path(name)
    os.chmod(temporary, (0o777 if directory else 0o666) & ~current_umask())
    try:
        yield temporary
        if final_path.is_dir() and not final_path.is_symlink():
            remove_path(final_path)  # os.replace cannot replace a folder; a file it replaces atomically
        os.replace(temporary, final_path)
    finally:
        remove_path(temporary)


def current_umask():
    """The process umask (readable only by setting it), so staged files get ordinary permissions."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_path(path):
    """Delete a file or a directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path, data):
    """Write data as indented JSON, atomically."""
    with staged_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def file_sha256(path):
    """The SHA-256 hex digest of one file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_fingerprint(directory):
    """A `sha256:` digest over every file's relative path and content under directory.

    Independent of where the files came from and of timestamps, so the network and a local
    copy of the same data give the same value.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    files = {path.relative_to(directory).as_posix(): path for path in directory.rglob("*") if path.is_file()}
    for relative in sorted(files):
        digest.update(f"{relative}\t{file_sha256(files[relative])}\n".encode())
    return f"sha256:{digest.hexdigest()}"
