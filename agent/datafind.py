"""Where a spec's data is on this machine: `data.location` as an absolute path, or a folder name looked up in the
places datasets are kept.

A spec that travels between machines (the bundled example's, one a colleague sends) cannot name an absolute path, so
a relative `data.location` such as `fashion-mnist` is looked up, in order, in each folder of `REPLICATE_DATA`
(os.pathsep-separated; the folder itself counts when its name is the location), in the project folder, and in
`/usr/share/datasets` (where Debian's `dataset-*` packages install). The spec then carries the absolute path, which
the harness hands to the script as `data_dir` and binds into the sandbox. Data that is not there is one line naming
the places looked in and the spec's own `data.source`: the tool never substitutes other data.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent import paths
from agent.spec import Spec, SpecError

SYSTEM_DATASETS = Path("/usr/share/datasets")


class DataNotFoundError(SpecError):
    """The spec's data.location is not on this machine."""


def search_folders() -> list[Path]:
    """The folders a relative data.location is looked up in, in order."""
    listed = [Path(p).expanduser() for p in os.environ.get("REPLICATE_DATA", "").split(os.pathsep) if p.strip()]
    return [*listed, paths.project_dir(), SYSTEM_DATASETS]


def _usable(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def find_location(location: str) -> Path | None:
    """The absolute folder `location` names on this machine, or None."""
    given = Path(location).expanduser()
    if given.is_absolute():
        return given if _usable(given) else None
    for folder in search_folders():
        for candidate in (folder / given, folder if folder.name == given.name and len(given.parts) == 1 else None):
            if candidate is not None and _usable(candidate):
                return candidate.resolve()
    return None


def not_found_message(spec: Spec) -> str:
    location = spec.data.location or ""
    if Path(location).expanduser().is_absolute():
        where = f"{location} does not exist or is empty"
    else:
        listed = os.environ.get("REPLICATE_DATA", "").strip()
        places = [f"REPLICATE_DATA ({listed})" if listed else "REPLICATE_DATA (not set)", str(paths.project_dir()),
                  str(SYSTEM_DATASETS)]  # fmt: skip
        where = f"no folder {location!r} with files in {', '.join(places)}"
    return (
        f"{spec.data.name} is not on this machine: {where}. Get it from {spec.data.source}, then set "
        f"REPLICATE_DATA to the folder that holds {Path(location).name}/ (or to that folder itself)"
    )


def with_local_data(spec: Spec) -> Spec:
    """`spec` with data.location made absolute; DataNotFoundError (one line) when the data is not on this machine.
    A spec without a location (the script fetches its data) is returned as it is."""
    if not spec.data.location:
        return spec
    found = find_location(spec.data.location)
    if found is None:
        raise DataNotFoundError(not_found_message(spec))
    if str(found) == spec.data.location:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"location": str(found)})})
